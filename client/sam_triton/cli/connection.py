"""The connection options every CLI command that talks to a server shares: API key, TLS and
which served model (``--model``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

if TYPE_CHECKING:
    from ..config import TlsConfig
    from ..errors import SamTritonError


class ConnectionOptions(TypedDict):
    """The keyword arguments of SamClient (and the other clients) that these options set."""

    api_key: str | None
    tls: TlsConfig | None
    model: NotRequired[str | None]


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
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="the served model to use when the server serves several (`sam-triton export --name NAME`); "
        "default: the one exported without a name",
    )


def connection_options(args: argparse.Namespace) -> ConnectionOptions:
    """TLS is on when any TLS file is given (a client certificate alone trusts the system CAs)."""
    from ..config import TlsConfig  # here: registering the subcommands must not import grpc

    wants_tls = args.tls_ca is not None or args.tls_cert is not None or args.tls_key is not None
    tls = TlsConfig(args.tls_ca, args.tls_key, args.tls_cert) if wants_tls else None
    return ConnectionOptions(api_key=args.api_key, tls=tls, model=args.model)


def _key_source(args: argparse.Namespace) -> str | None:
    from sam_triton_common.contract import API_KEY_ENV

    if getattr(args, "api_key", None):
        return "--api-key"
    return API_KEY_ENV if os.environ.get(API_KEY_ENV) else None


def next_step(error: SamTritonError, args: argparse.Namespace) -> str | None:
    """What the user of a CLI command can do about a failed call, or None when the message
    says it already (invalid input, overload ...)."""
    from ..errors import AuthenticationError, DeadlineExceededError, ServerUnavailableError

    url = getattr(args, "url", "the server")
    if isinstance(error, AuthenticationError):
        source = _key_source(args)
        if source is None:
            return "the server requires an API key: add --api-key KEY or set SAM_TRITON_API_KEY"
        return (
            f"the server refused the API key from {source}: use the key it was started with "
            "(`sam-triton serve --api-key` / its SAM_TRITON_API_KEY)"
        )
    if isinstance(error, ServerUnavailableError):
        text = str(error).lower()
        if "wrong_version_number" in text:  # a TLS hello answered by a plaintext server
            return (
                f"the server at {url} does not speak TLS: leave out --tls-ca/--tls-cert/--tls-key, "
                "or start it with --tls-cert/--tls-key"
            )
        if any(word in text for word in ("ssl", "handshake", "certificate")):
            return "the TLS handshake failed: check --tls-ca (the CA that signed the server's certificate)"
        if "socket closed" in text or "connection reset" in text:
            return (
                f"something answers at {url}, but not gRPC in plaintext: is that Triton's HTTP (8000) "
                "or metrics (8002) port instead of gRPC (8001)? A TLS server needs --tls-ca."
            )
        if "stopping" in text or "exiting" in text:
            return "the server is shutting down; start it again (`sam-triton serve`) and retry"
        return (
            f"is `sam-triton serve` running, and is {url} its gRPC port (default 8001)? "
            "--url HOST:PORT picks another"
        )
    if isinstance(error, DeadlineExceededError) and getattr(args, "timeout", None) is not None:
        return f"the call took longer than --timeout {args.timeout:g} s; raise it for large images"
    return None


def report_error(command: str, error: SamTritonError, args: argparse.Namespace) -> int:
    """Print a failed call the CLI way and return its exit code: 2 for input the user can fix
    in the command line, 1 for everything the server or the connection did."""
    from ..errors import InvalidInputError

    if isinstance(error, InvalidInputError):
        print(f"sam-triton {command}: invalid input: {error}", file=sys.stderr)
        return 2
    hint = next_step(error, args)
    print(f"sam-triton {command}: {error}" + (f"\n  -> {hint}" if hint else ""), file=sys.stderr)
    return 1


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
