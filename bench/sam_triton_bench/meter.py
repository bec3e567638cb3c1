"""Bytes on the wire per step, for scripts that time one call at a time."""

from __future__ import annotations


class ByteMeter:
    """A client's ``rpc_observer``: the payload bytes of the RPCs since the last :meth:`take`."""

    def __init__(self) -> None:
        self.sent = self.received = 0

    def __call__(self, method: str, sent: int, received: int) -> None:
        self.sent += sent
        self.received += received

    def take(self) -> tuple[int, int]:
        """(sent, received) since the last take, and start counting again."""
        taken = (self.sent, self.received)
        self.sent = self.received = 0
        return taken
