"""The one exception hierarchy of sam-triton, and the single gRPC status -> class mapping.

Every error raised by the SDK derives from :class:`SamTritonError` and carries the gRPC status
code name (``"INVALID_ARGUMENT"`` ...; ``None`` for client-side checks that never reached the
network) and the server's message verbatim, so callers can both ``except`` by kind and log what
the server said.
"""

from __future__ import annotations

from typing import Any


class SamTritonError(Exception):
    """Base class of every sam-triton error."""

    def __init__(self, message: str, *, code: str | None = None, server_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        """gRPC status code name (e.g. ``"UNAVAILABLE"``), or None for client-side errors."""
        self.server_message = server_message
        """The server's error text, unchanged (None when the error was raised locally)."""

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code else self.message


class InvalidInputError(SamTritonError, ValueError):
    """Bad input: rejected by client-side validation or by the server (INVALID_ARGUMENT).

    Also a ``ValueError`` so code written against ``SamPredictor``'s assertions/ValueErrors
    keeps catching it.
    """


class ServerUnavailableError(SamTritonError, ConnectionError):
    """The server cannot be reached (UNAVAILABLE), after the configured retries."""


class AuthenticationError(SamTritonError):
    """The server wants a valid API key for this call (``api_key=`` / ``SAM_TRITON_API_KEY``).

    Triton answers a restricted call without the right key with UNAVAILABLE; this class
    is not a ServerUnavailableError, so it is never retried: the same key fails again.
    """


class DeadlineExceededError(SamTritonError, TimeoutError):
    """The call did not finish within its deadline (DEADLINE_EXCEEDED)."""


class ModelNotFoundError(SamTritonError, LookupError):
    """The server does not know the requested model (NOT_FOUND / unknown model)."""


class ModelNotReadyError(SamTritonError):
    """The model exists but is not loaded/ready to serve."""


class ResourceExhaustedError(SamTritonError):
    """A message exceeded a size limit, or the server is over one of its limits."""


class EmbeddingNotFoundError(SamTritonError, LookupError):
    """A server-held embedding (session id) is not, or no longer, in the server's cache."""


class ServerError(SamTritonError):
    """Any other server-side failure (INTERNAL, UNKNOWN, ...)."""


# Server messages that refine a status code. Triton reports an unknown model with
# INVALID_ARGUMENT or NOT_FOUND depending on the path, and a model without loaded versions
# with UNAVAILABLE, so the text decides before the code does. Lower-case substrings.
_MESSAGE_RULES: tuple[tuple[str, type[SamTritonError]], ...] = (
    # Triton's restricted protocols: "This protocol is restricted, expecting header '...'".
    ("protocol is restricted", AuthenticationError),
    ("embedding not found", EmbeddingNotFoundError),
    ("unknown session", EmbeddingNotFoundError),
    # "Request for unknown model: 'x' has no available versions": known, but not loaded.
    ("has no available versions", ModelNotReadyError),
    ("is not ready", ModelNotReadyError),
    ("unknown model", ModelNotFoundError),
    ("is not found", ModelNotFoundError),
)

_CODE_RULES: dict[str, type[SamTritonError]] = {
    "INVALID_ARGUMENT": InvalidInputError,
    "OUT_OF_RANGE": InvalidInputError,
    "FAILED_PRECONDITION": InvalidInputError,
    "UNAVAILABLE": ServerUnavailableError,
    "UNAUTHENTICATED": AuthenticationError,  # a proxy in front of Triton (Envoy ext_authz ...)
    "PERMISSION_DENIED": AuthenticationError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "NOT_FOUND": ModelNotFoundError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
}


def error_class(code: str, message: str) -> type[SamTritonError]:
    """The exception class for a gRPC status code name and server message."""
    lowered = message.lower()
    for needle, cls in _MESSAGE_RULES:
        if needle in lowered:
            return cls
    return _CODE_RULES.get(code, ServerError)


def from_status(code: str, message: str, *, context: str = "") -> SamTritonError:
    """Build the SDK exception for a failed call (``context`` names the call, for the message)."""
    cls = error_class(code, message)
    text = f"{context}: {message}" if context else message
    return cls(text, code=code, server_message=message)


def from_rpc_error(error: Any, *, context: str = "") -> SamTritonError:
    """Translate a ``grpc.RpcError`` / ``grpc.aio.AioRpcError`` (sync or asyncio alike)."""
    code_obj = error.code() if callable(getattr(error, "code", None)) else None
    code = getattr(code_obj, "name", None) or "UNKNOWN"
    details = error.details() if callable(getattr(error, "details", None)) else None
    return from_status(code, details or str(error), context=context)
