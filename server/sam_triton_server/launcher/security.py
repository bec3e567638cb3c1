"""Who may reach the served models: TLS/mutual TLS and an API key, as Triton's own options.

Triton does both itself: gRPC SSL (``--grpc-use-ssl*``) and restricted protocols, which
answer a call of a restricted kind only when it carries a given header with a given value
(``--grpc-restricted-protocol`` / ``--http-restricted-api``). Health stays open so that
load balancers and orchestrators can probe without the key. Triton's HTTP endpoint has no
TLS, so with TLS on it is bound to localhost (see ServerOptions.arguments).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from sam_triton_common.contract import API_KEY_HEADER

RESTRICTED_PROTOCOLS = (
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
"""Every protocol but ``health``: the key guards the models, their data and the server's controls."""

# Triton parses "<protocols>:<header>=<value>" itself, so the key may not contain ':', ',' or
# '='; 16 characters at least, so a short guessable word is refused at start-up.
_API_KEY = re.compile(r"[A-Za-z0-9._~+/-]{16,}")


class SecurityConfigError(ValueError):
    """TLS files or the API key cannot be used as given."""


@dataclass(frozen=True)
class ServerTls:
    """PEM files: the server's certificate (chain) and key; ``client_ca`` turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def arguments(self) -> list[str]:
        for path in (self.cert, self.key, self.client_ca):
            if path is not None and not path.is_file():
                raise SecurityConfigError(f"TLS file {path} does not exist")
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.client_ca is not None:
            # Clients must present a certificate signed by this CA, or the handshake fails.
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.client_ca}"]
        return args


@dataclass(frozen=True)
class Security:
    tls: ServerTls | None = None
    api_key: str | None = None

    def arguments(self) -> list[str]:
        args = self.tls.arguments() if self.tls is not None else []
        if self.api_key is not None:
            if not _API_KEY.fullmatch(self.api_key):
                raise SecurityConfigError(
                    "the API key must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / -"
                )
            rule = f"{','.join(RESTRICTED_PROTOCOLS)}:{API_KEY_HEADER}={self.api_key}"
            args += [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}"]
        return args

    def describe(self) -> str:
        """E.g. ``"mutual TLS, API key"``, for the start-up line."""
        if self.tls is None:
            transport = "plaintext"
        else:
            transport = "mutual TLS" if self.tls.client_ca is not None else "TLS"
        return f"{transport}, API key" if self.api_key is not None else transport

    def exposure_warning(self, host: str) -> str | None:
        """Why listening on ``host`` is unsafe, or None (loopback, or TLS and a key)."""
        if is_loopback(host) or (self.tls is not None and self.api_key is not None):
            return None
        missing = " and ".join(
            name for name, value in (("TLS", self.tls), ("an API key", self.api_key)) if value is None
        )
        return (
            f"listening on {host} without {missing}: anyone who can reach the gRPC port can run the "
            "models and read the embeddings the server holds"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
