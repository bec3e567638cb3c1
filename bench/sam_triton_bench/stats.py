"""Statistics over :class:`~sam_triton_bench.loadgen.Sample` lists: summary and timeline.

Definitions (they are what ``results.json`` reports, so they are spelled out here):

* measured requests - those scheduled after the warm-up; warm-up requests are ignored.
* latency - completion minus *scheduled* time (see :mod:`.loadgen`); percentiles use numpy's
  linear interpolation over successful measured requests only (a fast error is not a fast
  answer).
* throughput - successful measured requests divided by the measurement window, which runs from
  the first measured request's scheduled time to the last measured completion. Counting only
  requests that started in the window, and waiting for all of them, avoids the edge error of
  "completions per fixed second" when one request takes a large part of the run (vit_b
  encoder on a CPU). In the open loop a server that falls behind stretches the window, so the
  throughput is what was achieved, not what was offered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .loadgen import Sample

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation); NaN for no values."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats:
        ms = [s * 1000.0 for s in seconds]
        if not ms:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan)
        p50, p90, p99 = (percentile(ms, q) for q in PERCENTILES)
        return cls(len(ms), float(np.mean(ms)), min(ms), p50, p90, p99, max(ms))


@dataclass(frozen=True)
class Summary:
    requests: int
    """Measured requests (warm-up excluded), successful or not."""
    ok: int
    errors: int
    """Failures; refusals by a full queue are counted in ``rejected`` instead."""
    window_s: float
    throughput_rps: float
    latency_ms: LatencyStats
    """From the scheduled time: what the user waited."""
    service_ms: LatencyStats
    """From the actual send; differs from latency only when sends were late (open loop)."""
    errors_by_status: dict[str, int] = field(default_factory=dict)
    errors_by_class: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    """One message per error class, so a results file says *why* without the raw samples."""
    warmup_requests: int = 0
    rejected: int = 0
    """Refused at once by a full server queue (ServerOverloadedError, after the SDK's retries)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measured(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if not s.warmup]


def summarize(samples: Sequence[Sample]) -> Summary:
    """Counts, throughput and latency percentiles of the measured requests."""
    real = measured(samples)
    good = [s for s in real if s.ok]
    bad = [s for s in real if not s.ok and not s.rejected]
    window = (max(s.end for s in real) - min(s.scheduled for s in real)) if real else 0.0
    examples: dict[str, str] = {}
    for s in bad:
        examples.setdefault(s.error or "?", s.message or "")
    return Summary(
        requests=len(real),
        ok=len(good),
        errors=len(bad),
        window_s=window,
        throughput_rps=len(good) / window if window > 0 else 0.0,
        latency_ms=LatencyStats.of([s.latency for s in good]),
        service_ms=LatencyStats.of([s.service for s in good]),
        errors_by_status=dict(Counter(s.status or "CLIENT" for s in bad)),
        errors_by_class=dict(Counter(s.error or "?" for s in bad)),
        error_examples=examples,
        warmup_requests=len(samples) - len(real),
        rejected=sum(s.rejected for s in real),
    )


@dataclass(frozen=True)
class TimelinePoint:
    """One bucket of the per-second timeline (by completion time, seconds since run start)."""

    t: float
    completed: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    warmup: bool
    rejected: int = 0


def timeline(samples: Sequence[Sample], bucket_s: float = 1.0) -> list[TimelinePoint]:
    """Completions per bucket of ``bucket_s`` seconds, with latency percentiles per bucket.

    Warm-up buckets are included (flagged) so a plot shows the warm-up too; a bucket is
    warm-up when it holds only warm-up requests.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    if not samples:
        return []
    buckets: dict[int, list[Sample]] = {}
    for s in samples:
        buckets.setdefault(int(s.end // bucket_s), []).append(s)
    points = []
    for b in range(min(buckets), max(buckets) + 1):
        items = buckets.get(b, [])
        ok = [s.latency * 1000.0 for s in items if s.ok]
        points.append(
            TimelinePoint(
                t=b * bucket_s,
                completed=len(ok),
                errors=sum(not s.ok and not s.rejected for s in items),
                rejected=sum(s.rejected for s in items),
                throughput_rps=len(ok) / bucket_s,
                p50_ms=percentile(ok, 50.0),
                p99_ms=percentile(ok, 99.0),
                warmup=bool(items) and all(s.warmup for s in items),
            )
        )
    return points
