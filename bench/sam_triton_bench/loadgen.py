"""Load generators: closed loop (fixed concurrency) and open loop (Poisson arrivals at a rate).

Both drive any ``async fn(index)`` and record one :class:`Sample` per call; they know nothing
about SAM or gRPC, which is what makes them testable with a callable that just sleeps.

Timing rules (all times are seconds since the start of the run, from ``time.perf_counter``):

* closed loop - each of N workers sends its next request as soon as its previous one
  returned, so a request is "scheduled" the moment it is sent and latency = service time.
  This measures the server at a fixed number of requests in flight.
* open loop - arrivals follow a Poisson process at ``rate`` requests/s whatever the server
  does (how real users behave). Latency is measured from the *scheduled* arrival time, not
  from when the request could actually be sent, so when the server (or this client, or the
  optional ``max_outstanding`` cap) falls behind, the waiting shows up in the latency instead
  of silently lowering the offered load ("coordinated omission").

Requests scheduled before ``warmup`` seconds are marked ``warmup`` and excluded from the
statistics; requests still in flight when the run ends are awaited, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

RequestFn = Callable[[int], Awaitable[object]]
"""One request: gets a running index (0, 1, 2, ...) so callers can vary images and prompts."""

SampleHook = Callable[["Sample"], None]

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One request's timing and outcome."""

    index: int
    scheduled: float
    """When the request was due: its send time (closed loop) or Poisson arrival (open loop)."""
    start: float
    """When ``fn`` was actually called (later than ``scheduled`` only in the open loop)."""
    end: float
    warmup: bool
    error: str | None = None
    """Exception class name, or None for success."""
    status: str | None = None
    """gRPC status code name carried by the exception (sam_triton errors), if any."""
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def rejected(self) -> bool:
        """Refused at once by a full queue (load shedding): counted apart from failures."""
        return self.error == "ServerOverloadedError"

    @property
    def latency(self) -> float:
        """What the user waited: completion minus the scheduled time (queueing included)."""
        return self.end - self.scheduled

    @property
    def service(self) -> float:
        """Completion minus the actual send time."""
        return self.end - self.start


def describe_error(exc: BaseException) -> tuple[str, str | None, str]:
    """(class name, gRPC status name or None, short message) of a failed request."""
    code = getattr(exc, "code", None)
    status = code if isinstance(code, str) else None
    return type(exc).__name__, status, str(exc)[:300]


class _Recorder:
    """Shared by both loops so a request is measured the same way in each."""

    def __init__(self, fn: RequestFn, warmup: float, on_sample: SampleHook | None) -> None:
        self.fn = fn
        self.warmup = warmup
        self.on_sample = on_sample
        self.samples: list[Sample] = []
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def call(self, index: int, scheduled: float | None = None) -> None:
        _, sample = await timed(lambda: self.fn(index), index, self.now, self.warmup, scheduled)
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)


async def timed(
    thunk: Callable[[], Awaitable[T]],
    index: int,
    clock: Callable[[], float],
    warmup: float,
    scheduled: float | None = None,
) -> tuple[T | None, Sample]:
    """Await ``thunk()`` and measure it: (its result, or None when it raised; the sample).

    ``clock`` gives seconds since the run started; ``scheduled`` defaults to the send time.
    """
    start = clock()
    due = start if scheduled is None else scheduled
    result: T | None = None
    error: tuple[str, str | None, str] | None = None
    try:
        result = await thunk()
    except Exception as exc:  # a failed request is a measurement, not a crash of the run
        error = describe_error(exc)
    sample = Sample(
        index=index,
        scheduled=due,
        start=start,
        end=clock(),
        warmup=due < warmup,
        error=error[0] if error else None,
        status=error[1] if error else None,
        message=error[2] if error else None,
    )
    return result, sample


def _check_times(duration: float, warmup: float) -> None:
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


async def closed_loop(
    fn: RequestFn,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    on_sample: SampleHook | None = None,
) -> list[Sample]:
    """``concurrency`` workers call ``fn`` back to back for ``warmup + duration`` seconds."""
    _check_times(duration, warmup)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    recorder = _Recorder(fn, warmup, on_sample)
    stop_at = warmup + duration
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while recorder.now() < stop_at:
            await recorder.call(next(counter))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(recorder.samples, key=lambda s: s.index)


def poisson_arrivals(rate: float, horizon: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Arrival times in [0, horizon) of a Poisson process with ``rate`` events per second.

    Exponential inter-arrival gaps with mean 1/rate, drawn from ``rng`` (seeded: the same
    seed gives the same schedule, so runs are comparable).
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    times: list[npt.NDArray[np.float64]] = []
    last = 0.0
    chunk = max(16, int(rate * horizon * 1.2) + 16)
    while last < horizon:
        arrivals = last + np.cumsum(rng.exponential(1.0 / rate, size=chunk))
        times.append(arrivals)
        last = float(arrivals[-1])
    all_times = np.concatenate(times)
    result: npt.NDArray[np.float64] = all_times[all_times < horizon]
    return result


async def open_loop(
    fn: RequestFn,
    *,
    rate: float,
    duration: float,
    warmup: float = 0.0,
    seed: int = 0,
    max_outstanding: int | None = None,
    on_sample: SampleHook | None = None,
) -> list[Sample]:
    """Call ``fn`` at Poisson arrival times (``rate``/s) for ``warmup + duration`` seconds.

    ``max_outstanding`` bounds the requests in flight (protects the client's memory when the
    server cannot keep up); a request waiting for a slot still counts its wait as latency.
    """
    _check_times(duration, warmup)
    if max_outstanding is not None and max_outstanding < 1:
        raise ValueError(f"max_outstanding must be >= 1, got {max_outstanding}")
    arrivals = poisson_arrivals(rate, warmup + duration, np.random.default_rng(seed))
    recorder = _Recorder(fn, warmup, on_sample)
    gate = asyncio.Semaphore(max_outstanding) if max_outstanding else None

    async def one(index: int, due: float) -> None:
        if gate is None:
            await recorder.call(index, due)
            return
        async with gate:
            await recorder.call(index, due)

    tasks: list[asyncio.Task[None]] = []
    for index, due in enumerate(arrivals.tolist()):
        delay = due - recorder.now()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    return sorted(recorder.samples, key=lambda s: s.index)
