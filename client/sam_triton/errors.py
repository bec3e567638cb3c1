"""The one exception hierarchy of sam-triton, and the single gRPC status -> class mapping.

Every error raised by the SDK derives from :class:`SamTritonError` and carries the gRPC status
code name (``"INVALID_ARGUMENT"`` ...; ``None`` for client-side checks that never reached the
network) and the server's message verbatim, so callers can both ``except`` by kind and log what
the server said.
"""

from __future__ import annotations

from typing import Any

# Defined beside the shared code that raises them; these are the same classes.
from sam_triton_common.errors import InvalidInputError as InvalidInputError
from sam_triton_common.errors import SamTritonError as SamTritonError
from sam_triton_common.errors import ServerError as ServerError


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


class ModelNotReadyError(ServerUnavailableError):
    """The model exists but is not loaded on this server now: loading, or unloading because the
    server is stopping (Triton: "... has no available versions").

    Nothing was computed and another replica (or this one, once loaded) can answer, so it is
    a ServerUnavailableError, retried like one: behind a balancer the retry lands elsewhere.
    """


class ResourceExhaustedError(SamTritonError):
    """A message exceeded a size limit, or the server is over one of its limits."""


class ServerOverloadedError(ResourceExhaustedError):
    """The server refused the request at once because a queue is full (load shedding).

    Nothing was computed, so repeating it later is safe: the SDK retries it with jittered
    exponential backoff while the call's deadline leaves room (see ``RetryPolicy``).
    """


class EmbeddingNotFoundError(SamTritonError, LookupError):
    """A server-held embedding (session id) is not, or no longer, in the server's cache."""


class PredictionNotFoundError(SamTritonError, LookupError):
    """A refinement named a kept prediction (``PreviousMask``) made on another image of the
    session, or one the server does not hold and the SDK cannot make again (a ``PreviousMask``
    built by hand, without the prompt that made it). Refine with the mask's logits instead
    (``predict(..., low_res_logits=True)``)."""


class VideoSessionNotFoundError(SamTritonError, LookupError):
    """The server does not hold this video session (any more): closed, dropped after its idle
    time-out or to make room, or held by another replica (one that restarted loses its
    sessions). Its objects' memories are gone: open a new session and prompt again."""


# Server messages that refine a status code. Triton reports an unknown model with
# INVALID_ARGUMENT or NOT_FOUND depending on the path, and a model without loaded versions
# with UNAVAILABLE, so the text decides before the code does. Lower-case substrings.
_MESSAGE_RULES: tuple[tuple[str, type[SamTritonError]], ...] = (
    # Triton's bounded queues ("Exceeds maximum queue size") and sam_session's embed pool.
    ("exceeds maximum queue size", ServerOverloadedError),
    ("sam_session overloaded", ServerOverloadedError),
    ("sam_video overloaded", ServerOverloadedError),
    # A request whose KServe "timeout" ran out in a queue was dropped, never computed.
    ("request timeout expired", DeadlineExceededError),
    # Triton's restricted protocols: "This protocol is restricted, expecting header '...'".
    ("protocol is restricted", AuthenticationError),
    ("embedding not found", EmbeddingNotFoundError),
    ("video session not found", VideoSessionNotFoundError),
    ("prediction not found", PredictionNotFoundError),
    ("unknown session", EmbeddingNotFoundError),
    # "Request for unknown model: 'x' has no available versions": known, but not loaded (a
    # stopping server unloads its models before it closes its port), so not a missing model.
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
