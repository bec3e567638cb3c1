"""The bench harness's measuring logic, with fake request callables that sleep or wait.

What is under test is the load generator and the statistics, not a server: a callable that
sleeps a known time (or waits until told) stands in for a request. The assertions are about
counts, order and the seeded schedule, and about sleeps only as lower bounds (a sleep never
ends early): a busy machine makes everything slower, never faster, so none of them can flake.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from sam_triton.errors import InvalidInputError
from sam_triton_bench.loadgen import Sample, closed_loop, open_loop, poisson_arrivals
from sam_triton_bench.stats import LatencyStats, percentile, summarize, timeline


def sample(
    index: int,
    scheduled: float,
    start: float,
    end: float,
    *,
    warmup: bool = False,
    error: str | None = None,
    status: str | None = None,
) -> Sample:
    return Sample(index, scheduled, start, end, warmup, error, status, "boom" if error else None)


# --------------------------------------------------------------------------- stats


def test_percentile_matches_numpy_and_handles_empty() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))
    empty = LatencyStats.of([])
    assert empty.count == 0 and math.isnan(empty.p99)


def test_summary_excludes_warmup_and_failed_requests_from_latency() -> None:
    samples = [
        sample(0, 0.0, 0.0, 5.0, warmup=True),  # a slow warm-up request must not count
        sample(1, 1.0, 1.0, 1.1),
        sample(2, 1.1, 1.1, 1.3),
        sample(3, 1.3, 1.3, 1.4, error="InvalidInputError", status="INVALID_ARGUMENT"),
        sample(4, 1.4, 1.4, 2.0, error="ServerUnavailableError", status="UNAVAILABLE"),
        sample(5, 1.5, 1.6, 2.0),  # sent 0.1 s late: latency 0.5 s, service 0.4 s
    ]
    s = summarize(samples)
    assert (s.requests, s.ok, s.errors, s.warmup_requests) == (5, 3, 2, 1)
    assert s.window_s == pytest.approx(1.0)  # first measured scheduled (1.0) .. last end (2.0)
    assert s.throughput_rps == pytest.approx(3.0)
    assert s.latency_ms.max == pytest.approx(500.0)
    assert s.service_ms.max == pytest.approx(400.0)
    assert s.latency_ms.p50 == pytest.approx(200.0)
    assert s.errors_by_status == {"INVALID_ARGUMENT": 1, "UNAVAILABLE": 1}
    assert s.errors_by_class == {"InvalidInputError": 1, "ServerUnavailableError": 1}
    assert s.error_examples["InvalidInputError"] == "boom"


def test_timeline_buckets_by_completion_second() -> None:
    samples = [
        sample(0, 0.0, 0.0, 0.5, warmup=True),
        sample(1, 1.0, 1.0, 1.2),
        sample(2, 1.0, 1.0, 1.9),
        sample(3, 3.0, 3.0, 3.1, error="X"),
    ]
    points = timeline(samples)
    assert [p.t for p in points] == [0.0, 1.0, 2.0, 3.0]  # the empty second is kept
    assert [p.completed for p in points] == [1, 2, 0, 0]
    assert [p.errors for p in points] == [0, 0, 0, 1]
    assert [p.warmup for p in points] == [True, False, False, False]
    assert points[1].p50_ms == pytest.approx(550.0)
    assert math.isnan(points[2].p50_ms)


# --------------------------------------------------------------------------- Poisson arrivals


def test_poisson_interarrival_mean_is_one_over_rate() -> None:
    rate = 200.0
    arrivals = poisson_arrivals(rate, 50.0, np.random.default_rng(7))
    gaps = np.diff(arrivals)
    assert len(arrivals) == pytest.approx(rate * 50.0, rel=0.05)
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.05)
    # Exponential gaps: standard deviation equals the mean (a fixed-interval schedule would be 0).
    assert gaps.std() == pytest.approx(1.0 / rate, rel=0.1)
    assert (gaps > 0).all() and arrivals.max() < 50.0
    again = poisson_arrivals(rate, 50.0, np.random.default_rng(7))
    assert np.array_equal(arrivals, again)  # seeded: the same schedule every run


def test_poisson_rejects_bad_rate() -> None:
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 1.0, np.random.default_rng(0))


# --------------------------------------------------------------------------- closed loop


class FakeServer:
    """An async "request" that sleeps; tracks how many calls are in flight at once."""

    def __init__(self, delay: float, serial: bool = False, fail_every: int = 0) -> None:
        self.delay = delay
        self.lock = asyncio.Lock() if serial else None
        self.fail_every = fail_every
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def __call__(self, index: int) -> None:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.lock is not None:
                async with self.lock:  # one at a time: a saturated single-instance server
                    await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(self.delay)
            if self.fail_every and index % self.fail_every == 0:
                raise InvalidInputError("bad request", code="INVALID_ARGUMENT")
        finally:
            self.in_flight -= 1


def test_closed_loop_keeps_exactly_n_requests_in_flight() -> None:
    server = FakeServer(0.02)
    samples = asyncio.run(closed_loop(server, concurrency=4, duration=0.6, warmup=0.1))
    assert server.max_in_flight == 4
    assert len(samples) == server.calls
    assert [s.index for s in samples] == list(range(len(samples)))
    assert all(s.scheduled == s.start for s in samples)  # closed loop: sent when due
    s = summarize(samples)
    assert s.errors == 0 and s.requests + s.warmup_requests == server.calls
    assert all(x.service >= 0.019 for x in samples)  # each call's whole sleep is measured
    # 4 workers back to back: at most 4 requests per 20 ms of the run, whatever the machine.
    assert server.calls <= 4 * (math.floor(0.7 / 0.019) + 1)
    assert s.throughput_rps == pytest.approx(s.ok / s.window_s)


def test_closed_loop_stops_issuing_after_the_duration_and_waits_for_in_flight() -> None:
    server = FakeServer(0.15)
    samples = asyncio.run(closed_loop(server, concurrency=2, duration=0.2))
    # Each worker's second call starts at 0.15 s at the earliest and ends after 0.2 s: had the
    # loop gone on issuing after the duration, there would be more than two each.
    assert server.calls <= 2 * 2
    assert server.in_flight == 0  # every request finished and was recorded
    assert len(samples) == server.calls


def test_errors_are_recorded_with_their_status_not_raised() -> None:
    server = FakeServer(0.005, fail_every=3)
    samples = asyncio.run(closed_loop(server, concurrency=2, duration=0.3))
    failed = [s for s in samples if not s.ok]
    assert failed and all(s.index % 3 == 0 for s in failed)
    assert {s.status for s in failed} == {"INVALID_ARGUMENT"}
    assert summarize(samples).errors_by_class == {
        "InvalidInputError": len([s for s in failed if not s.warmup])
    }


# --------------------------------------------------------------------------- open loop


def schedule(rate: float, horizon: float, seed: int) -> list[float]:
    """The arrival times open_loop draws for ``seed``."""
    return [float(t) for t in poisson_arrivals(rate, horizon, np.random.default_rng(seed))]


def test_open_loop_offers_the_seeded_poisson_schedule() -> None:
    server = FakeServer(0.01)
    samples = asyncio.run(open_loop(server, rate=50.0, duration=2.0, warmup=0.2, seed=1))
    due = schedule(50.0, 2.2, seed=1)
    # Every arrival of the schedule is sent, none early, and counted on its side of the warm-up.
    assert [x.scheduled for x in samples] == due and server.calls == len(due)
    assert all(x.start >= x.scheduled for x in samples)
    s = summarize(samples)
    assert (s.requests, s.warmup_requests) == (sum(t >= 0.2 for t in due), sum(t < 0.2 for t in due))
    assert s.errors == 0 and all(x.service >= 0.009 for x in samples)


class HeldServer:
    """An async "request" that answers only once ``expected`` requests have arrived: an open
    loop must have sent them all without waiting for any answer."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = 0
        self.max_in_flight = 0
        self.all_sent = asyncio.Event()

    async def __call__(self, index: int) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.in_flight == self.expected:
            self.all_sent.set()
        await self.all_sent.wait()
        self.in_flight -= 1


def test_open_loop_latency_includes_queueing_when_answers_lag_behind_the_arrivals() -> None:
    due = schedule(100.0, 0.5, seed=2)

    async def run() -> tuple[HeldServer, list[Sample]]:
        server = HeldServer(len(due))
        return server, await open_loop(server, rate=100.0, duration=0.5, seed=2)

    server, samples = asyncio.run(run())
    assert server.max_in_flight == len(due)  # arrivals did not wait for answers (open loop)
    # The first arrival waited for the whole schedule: its latency is at least its length,
    # and latency is counted from each request's scheduled time.
    first = min(samples, key=lambda x: x.scheduled)
    assert first.latency >= due[-1] - due[0]
    assert len(samples) == len(due) and all(x.ok for x in samples)


def test_open_loop_latency_counts_from_the_scheduled_time_when_sends_are_held_back() -> None:
    # One request allowed in flight, and the first one lasts past the last scheduled arrival:
    # every other request is held back by the *client*, and its latency shows the wait.
    due = schedule(100.0, 0.6, seed=3)
    in_flight: list[int] = []

    async def first_is_long(index: int) -> None:
        in_flight.append(index)
        await asyncio.sleep(due[-1] + 0.01 if index == 0 else 0.001)
        in_flight.remove(index)
        assert not in_flight

    samples = asyncio.run(open_loop(first_is_long, rate=100.0, duration=0.6, seed=3, max_outstanding=1))
    assert len(samples) == len(due) and all(x.ok for x in samples)  # never two in flight
    by_start = sorted(samples, key=lambda x: x.start)
    assert all(b.start >= a.end for a, b in zip(by_start, by_start[1:], strict=False))  # one at a time
    held = [x for x in samples[1:] if x.start > x.scheduled]
    assert len(held) == len(due) - 1  # all but the first waited for a slot
    assert all(x.latency >= x.service + (x.start - x.scheduled) for x in held)


def test_open_loop_marks_warmup_by_scheduled_time() -> None:
    server = FakeServer(0.001)
    samples = asyncio.run(open_loop(server, rate=100.0, duration=0.3, warmup=0.3, seed=4))
    assert samples
    assert all(x.warmup == (x.scheduled < 0.3) for x in samples)
    assert any(x.warmup for x in samples) and any(not x.warmup for x in samples)


@pytest.mark.parametrize("kwargs", [{"duration": 0}, {"duration": 1, "warmup": -1}])
def test_load_generators_reject_bad_times(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        asyncio.run(closed_loop(FakeServer(0), concurrency=1, **kwargs))
    with pytest.raises(ValueError):
        asyncio.run(open_loop(FakeServer(0), rate=1.0, **kwargs))
