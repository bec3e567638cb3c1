"""``sam_video``'s sessions: each video's tracking state under its session id, bounded in count
and bytes, dropped when idle for ``ttl_seconds`` or closed.

A session's state is whatever the tracker keeps (its ``nbytes`` is what counts); this store
only decides which sessions live. A new session beyond ``max_sessions`` first drops the expired
ones, then is refused (the live ones are users' videos: dropping one for a newcomer would
break a stream that did nothing wrong). Past ``max_bytes`` the least recently used *other*
sessions are dropped ("evicted"), so one growing session never pushes the store over.
Thread-safe: the model's worker and its dispatcher both use it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    """A session's state: its bytes, and its length (the objects it tracks)."""

    @property
    def nbytes(self) -> int: ...

    def __len__(self) -> int: ...


S = TypeVar("S", bound=Sized)


class SessionLimit(RuntimeError):
    """No room for another session (``max_sessions`` live ones, none expired)."""


@dataclass
class VideoSessionStats:
    opened: int = 0
    closed: int = 0
    expired: int = 0
    evicted: int = 0


@dataclass
class _Entry(Generic[S]):
    state: S
    used: float


class VideoSessionStore(Generic[S]):
    def __init__(self, max_sessions: int, max_bytes: int, ttl_seconds: float) -> None:
        if max_sessions < 1 or max_bytes < 1 or ttl_seconds <= 0:
            raise ValueError("max_sessions, max_bytes and ttl_seconds must be positive")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.stats = VideoSessionStats()
        self._entries: OrderedDict[str, _Entry[S]] = OrderedDict()  # least recently used first
        self._gone: dict[str, str] = {}  # recently dropped id -> why (for the NOT_FOUND message)
        self._lock = threading.Lock()

    def open(self, session_id: str, state: S) -> None:
        """Hold ``state`` under ``session_id`` (replacing an earlier session of that id)."""
        with self._lock:
            self._expire(time.monotonic())
            if session_id not in self._entries and len(self._entries) >= self.max_sessions:
                raise SessionLimit(
                    f"{len(self._entries)} video sessions are open (max_sessions); retry later"
                )
            self._entries[session_id] = _Entry(state, time.monotonic())
            self._entries.move_to_end(session_id)
            self._gone.pop(session_id, None)
            self.stats.opened += 1

    def get(self, session_id: str) -> S | None:
        """The session's state (marking it used), or None; :meth:`why_gone` says why."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            entry.used = now
            self._entries.move_to_end(session_id)
            return entry.state

    def close(self, session_id: str) -> bool:
        with self._lock:
            if self._entries.pop(session_id, None) is None:
                return False
            self._forget(session_id, "closed")
            self.stats.closed += 1
            return True

    def fit(self, keep: str) -> list[str]:
        """After ``keep`` grew: drop least recently used other sessions until all fit in
        ``max_bytes``; the ids dropped."""
        with self._lock:
            dropped = []
            while self._nbytes() > self.max_bytes:
                victim = next((k for k in self._entries if k != keep), None)
                if victim is None:
                    break
                del self._entries[victim]
                self._forget(victim, "evicted to keep the server's video sessions within max_bytes")
                self.stats.evicted += 1
                dropped.append(victim)
            return dropped

    def why_gone(self, session_id: str) -> str:
        with self._lock:
            return self._gone.get(session_id, "never opened here, or dropped long ago")

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._nbytes()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def objects(self) -> int:
        """Objects tracked across sessions."""
        with self._lock:
            return sum(len(e.state) for e in self._entries.values())

    def _nbytes(self) -> int:
        return sum(int(e.state.nbytes) for e in self._entries.values())

    def _expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if now - e.used > self.ttl_seconds]:
            del self._entries[key]
            self._forget(key, f"expired after {self.ttl_seconds:g} s without a request")
            self.stats.expired += 1

    def _forget(self, session_id: str, why: str) -> None:
        self._gone[session_id] = why
        while len(self._gone) > 4 * self.max_sessions:  # a bounded memory of endings
            self._gone.pop(next(iter(self._gone)))
