"""The order ``sam_video`` does its work in: each session's requests one at a time in arrival
order (a prompt sent between two frames applies between them), and across sessions the most
urgent first: an interactive prompt before a live frame before an offline propagation's frame
(``PROMPT`` < ``LIVE`` < ``OFFLINE``). So a click on one stream never waits behind another
stream's whole video, only behind the one step running. Among equally urgent heads the session
that had its last turn longest ago goes first (then arrival order): streams share an
overloaded lane in turn, instead of the one whose frames happen to arrive just before a worker
frees up winning every time while the other's frames go stale (seen: 11 frames against 1 of 15
each). A job that did no work (a live frame dropped as late) does not use up its session's turn.

Workers take the head of the most urgent session that is not already being worked on. The
backlog is bounded (``max_pending``): beyond it :meth:`submit` raises :class:`LaneFull` at once.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable

PROMPT, LIVE, OFFLINE = 1, 2, 3

# A job answers its request itself and never raises; it returns False when it did no work.
Job = Callable[[], bool | None]
# Sessions whose last turn the lane remembers (a stream sending one frame at a time has nothing
# queued between its frames, so its turn cannot live with its queue).
_REMEMBERED_TURNS = 4096


class LaneFull(RuntimeError):
    pass


class VideoLane:
    def __init__(self, workers: int, max_pending: int) -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be >= 1")
        self.max_pending = max_pending
        self._queues: dict[str, deque[tuple[int, int, Job]]] = {}
        self._busy: set[str] = set()
        self._last_turn: dict[str, int] = {}
        self._turns = itertools.count()
        self._pending = 0
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"sam-video-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        with self._cv:
            return self._pending

    def submit(self, session_id: str, priority: int, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise LaneFull("the model is stopping")
            if self._pending >= self.max_pending:
                raise LaneFull(f"{self._pending} video requests are waiting (video_queue_size)")
            self._queues.setdefault(session_id, deque()).append((priority, next(self._order), job))
            self._pending += 1
            self._cv.notify()

    def _next(self) -> tuple[str, Job] | None:
        """The most urgent head among idle sessions (called with the lock held)."""
        best: tuple[int, int, int, str] | None = None
        for session_id, queue in self._queues.items():
            if session_id in self._busy:
                continue
            priority, order, _ = queue[0]
            key = (priority, self._last_turn.get(session_id, -1), order, session_id)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        session_id = best[3]
        queue = self._queues[session_id]
        job = queue.popleft()[2]
        if not queue:
            del self._queues[session_id]
        self._busy.add(session_id)
        return session_id, job

    def _work(self) -> None:
        while True:
            with self._cv:
                picked = self._next()
                while picked is None and not self._stopping:
                    self._cv.wait()
                    picked = self._next()
                if picked is None:
                    return
            session_id, job = picked
            worked: bool | None = True
            try:
                worked = job()
            finally:
                with self._cv:
                    if worked is not False:
                        self._took_turn(session_id)
                    self._busy.discard(session_id)
                    self._pending -= 1
                    self._cv.notify_all()

    def _took_turn(self, session_id: str) -> None:
        """Remember ``session_id``'s newest turn (called with the lock held)."""
        self._last_turn.pop(session_id, None)  # re-inserted last: the dict runs oldest first
        self._last_turn[session_id] = next(self._turns)
        if len(self._last_turn) > _REMEMBERED_TURNS:
            del self._last_turn[next(iter(self._last_turn))]

    def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
