"""The root of sam-triton's exception hierarchy and the errors the shared code raises.

:mod:`sam_triton.errors` re-exports these classes and adds the rest of the hierarchy (with
the gRPC status mapping), so ``sam_triton.InvalidInputError`` is this very class: an SDK user
catches what the shared AMG core raises, and the server maps it to INVALID_ARGUMENT.
"""

from __future__ import annotations


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


class ServerError(SamTritonError):
    """Any other server-side failure (INTERNAL, UNKNOWN, ...)."""
