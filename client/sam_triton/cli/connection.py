"""The connection options every CLI command that talks to a server shares: API key and TLS."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from ..config import TlsConfig


class ConnectionOptions(TypedDict):
    """The keyword arguments of SamClient (and the other clients) that these options set."""

    api_key: str | None
    tls: TlsConfig | None


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection security")
    group.add_argument(
        "--api-key", help="the server's API key (default: the SAM_TRITON_API_KEY environment variable)"
    )
    group.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="connect with TLS, trusting this CA (default: plaintext)"
    )
    group.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="client certificate for mutual TLS (with --tls-key)"
    )
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="client private key for mutual TLS")


def connection_options(args: argparse.Namespace) -> ConnectionOptions:
    """TLS is on when any TLS file is given (a client certificate alone trusts the system CAs)."""
    from ..config import TlsConfig  # here: registering the subcommands must not import grpc

    wants_tls = args.tls_ca is not None or args.tls_cert is not None or args.tls_key is not None
    tls = TlsConfig(args.tls_ca, args.tls_key, args.tls_cert) if wants_tls else None
    return ConnectionOptions(api_key=args.api_key, tls=tls)


REDACTED = "<redacted>"


def redact_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Parsed arguments fit for a report: the API key's value hidden."""
    return {k: REDACTED if k == "api_key" and v is not None else v for k, v in arguments.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit for a report: ``--api-key KEY`` / ``--api-key=KEY`` hidden."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--api-key="):
            out.append(f"--api-key={REDACTED}")
        elif i > 0 and argv[i - 1] == "--api-key":
            out.append(REDACTED)
        else:
            out.append(arg)
    return out
