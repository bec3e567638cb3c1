"""Clicks and lookups off the request thread: one worker, arrival order, a bounded backlog.

Why ``sam_session`` needs it: Triton 2.51's dynamic batcher looks for a free model instance
when a request arrives and when an execution ends, and otherwise every 500 ms. When the
request arrives while ``execute`` is still running (the caller got its answer through the
response sender, before ``execute`` returned, and sent the next click at once) and the batcher
then checks before the instance thread is back waiting for work, the request sits out the
rest of those 500 ms: 7-20% of back-to-back clicks stalled for about half a second.
``sam_session`` therefore has no dynamic batcher. Triton hands it each request as it arrives
(the instance thread waits on the request queue itself, nothing polls), ``execute`` only
dispatches, and what the batcher's queue gave (a bound, arrival order, the caller's deadline)
lives here for clicks and lookups and in the :class:`~sam_triton_server.backend.embed_pool.EmbedPool`
for embeds. Clicks still never wait for encodes: those run on the pool's own workers.

Plain threads, no Triton imports: the unit tests drive it directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Job = Callable[[], None]


class LaneFull(RuntimeError):
    """The backlog is at its bound: the request must be refused at once, not queued."""


class ClickLane:
    def __init__(
        self,
        max_pending: int,
        name: str = "sam-click",
        on_pending: Callable[[int], None] = lambda pending: None,
    ) -> None:
        """``max_pending``: jobs accepted and not finished (running or waiting) at most;
        ``on_pending`` hears every change of that count, in order."""
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        # One worker: the decoder's onnxruntime session already uses every core for one click.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._on_pending = on_pending

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Job) -> None:
        """Run ``job`` after every job accepted before it; LaneFull when the backlog is at its
        bound. ``job`` handles its own errors: nothing is raised back here."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise LaneFull(
                    f"{self._pending} clicks are already running or waiting (limit {self.max_pending})"
                )
            self._moved(+1)
        self._executor.submit(self._run, job)

    def _run(self, job: Job) -> None:
        try:
            job()
        finally:
            with self._lock:
                self._moved(-1)

    def _moved(self, step: int) -> None:
        self._pending += step
        self._on_pending(self._pending)

    def shutdown(self) -> None:
        """Finish every accepted job, then stop."""
        self._executor.shutdown(wait=True, cancel_futures=False)
