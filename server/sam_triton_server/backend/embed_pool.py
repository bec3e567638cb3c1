"""Encodes off the request thread: a few worker threads, a bounded backlog, one encode per key.

``sam_session`` answers clicks and lookups in the thread that Triton calls ``execute`` in,
and hands every request that needs an encode to this pool, so a click never waits for
another user's encode (the BLS call into ``sam_encoder`` and onnxruntime both release the
GIL while they work). The pool:

- runs at most ``workers`` jobs at once and keeps at most ``max_pending`` jobs (running,
  queued and waiting followers together); beyond that :meth:`EmbedPool.submit` raises
  :class:`PoolFull` at once instead of letting the backlog grow;
- runs one job per key at a time: a request for a key whose encode is in flight (the same
  image embedded twice, a click that races its own embed) *follows* it, running once that
  encode has landed, instead of encoding again or missing the cache;
- refuses at once a new encode that could not even start before its caller's deadline: the
  backlog ahead of it times a running mean of recent encodes (:meth:`record_encode`) is
  longer than the time it has left. Admitted, it would only wait and then be dropped.

Plain threads and callbacks, no Triton imports: the unit tests drive it directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

Job = Callable[[], None]


class PoolFull(RuntimeError):
    """The backlog is at its bound, or too long for the request's deadline; the request
    must be refused, not queued."""


class EncodeTimes:
    """Running mean of recent encode durations, weighted towards the newest; None before
    the first. Updated from the pool's workers."""

    def __init__(self, weight: float = 0.3) -> None:
        self.weight = weight
        self._mean: float | None = None
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            mean = self._mean
            self._mean = seconds if mean is None else mean + self.weight * (seconds - mean)

    @property
    def mean(self) -> float | None:
        return self._mean


class EmbedPool:
    def __init__(
        self,
        workers: int,
        max_pending: int,
        name: str = "sam-embed",
        on_pending: Callable[[int], None] = lambda pending: None,
    ) -> None:
        """``on_pending`` hears every change of :attr:`pending` (under the pool's lock, so in order)."""
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be >= 1")
        self.workers = workers
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Condition()
        self._in_flight: dict[str, Future[None]] = {}
        self._pending = 0
        self._on_pending = on_pending
        self._encode_times = EncodeTimes()

    @property
    def pending(self) -> int:
        """Jobs and followers accepted and not yet finished."""
        return self._pending

    def in_flight(self, key: str) -> bool:
        with self._lock:
            return key in self._in_flight

    def submit(self, key: str, job: Job, time_left: float | None = None) -> None:
        """Run ``job`` on a worker, after the job in flight for ``key`` if there is one.

        Raises PoolFull when the backlog is at ``max_pending``, or when ``time_left`` (seconds
        to the caller's deadline; None: no deadline) is shorter than the estimated wait for a
        new encode. ``job`` handles its own errors: nothing is raised back here.
        """
        with self._lock:
            if time_left is not None and key not in self._in_flight:
                self._refuse_past_deadline(time_left)
            self._admit()
            self._start_locked(key, job)

    def record_encode(self, seconds: float) -> None:
        """How long one encode took, for the wait estimate."""
        self._encode_times.add(seconds)

    def _refuse_past_deadline(self, time_left: float) -> None:
        # Every pending job is one encode at most, and a stub's encodes run one at a time
        # (its BLS calls take turns), so this is when a new one would start.
        each = self._encode_times.mean
        if each is None:
            return
        wait = self._pending * each
        if wait > time_left:
            raise PoolFull(
                f"about {wait:.1f} s of encodes ahead ({self._pending} running or waiting, "
                f"{each:.1f} s each), longer than the {time_left:.1f} s the caller's deadline leaves"
            )

    def _admit(self) -> None:
        if self._pending >= self.max_pending:
            raise PoolFull(
                f"{self._pending} encodes are already running or waiting "
                f"(limit {self.max_pending}, {self.workers} at a time)"
            )
        self._pending += 1
        self._on_pending(self._pending)

    def _start_locked(self, key: str, job: Job) -> None:
        ahead = self._in_flight.get(key)
        if ahead is None:
            self._in_flight[key] = self._executor.submit(self._run, key, job)
        else:
            # Not done yet: _run drops the key (under this lock) before its future completes,
            # so the callback fires later, in the worker thread, never here.
            ahead.add_done_callback(lambda _: self._start(key, job))

    def _start(self, key: str, job: Job) -> None:
        with self._lock:
            self._start_locked(key, job)

    def follow(self, key: str, job: Job) -> bool:
        """Run ``job`` in the worker that finishes the in-flight job of ``key`` (for cheap
        work: a click or lookup that raced its own embed); False, and nothing scheduled, when
        none is in flight. Counts against the bound like a job."""
        with self._lock:
            ahead = self._in_flight.get(key)
            if ahead is None:
                return False
            self._admit()
            ahead.add_done_callback(lambda _: self._run_follower(job))  # not done: see above
        return True

    def _run(self, key: str, job: Job) -> None:
        try:
            job()
        finally:
            with self._lock:
                self._done_one()
                # Followers run from this future's callbacks, after this returns: by then the
                # key is no longer in flight, so a following job starts a fresh one.
                self._in_flight.pop(key, None)

    def _run_follower(self, job: Job) -> None:
        try:
            job()
        finally:
            with self._lock:
                self._done_one()

    def _done_one(self) -> None:
        self._pending -= 1
        self._on_pending(self._pending)
        if not self._pending:
            self._lock.notify_all()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Finish every accepted job (followers included: they may start new ones), then stop."""
        with self._lock:
            self._lock.wait_for(lambda: not self._pending, timeout)
        self._executor.shutdown(wait=True, cancel_futures=False)
