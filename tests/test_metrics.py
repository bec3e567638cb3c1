"""The metrics adapter without Triton: which series each model creates and how they move.

A fake ``MetricFamily`` records what the models would send to Triton; test_metrics_e2e.py
scrapes the real server.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
from sam_triton_server.backend import metrics
from sam_triton_server.backend.embed_pool import EmbedPool
from sam_triton_server.backend.embedding_cache import EmbeddingCache

EMBEDDING = np.zeros((256, 64, 64), np.float32)


class FakeMetric:
    def __init__(self, family: FakeFamily, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.family, self.labels, self.buckets = family, labels, buckets
        self.value = 0.0
        self.observed: list[float] = []
        self.sets = 0

    def increment(self, value: float) -> None:
        assert self.family.kind == "COUNTER" and value > 0
        self.value += value

    def set(self, value: float) -> None:
        assert self.family.kind == "GAUGE"
        self.value = value
        self.sets += 1

    def observe(self, value: float) -> None:
        assert self.family.kind == "HISTOGRAM"
        self.observed.append(value)


class FakeFamily:
    COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"
    created: list[FakeFamily]

    def __init__(self, name: str, description: str, kind: str) -> None:
        assert description
        self.name, self.kind = name, kind
        self.metrics: list[FakeMetric] = []
        self.created.append(self)

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> FakeMetric:  # noqa: N802
        assert (buckets is not None) == (self.kind == "HISTOGRAM")  # Triton refuses either mismatch
        metric = FakeMetric(self, labels, buckets)
        self.metrics.append(metric)
        return metric


@pytest.fixture()
def pb() -> Any:
    family = type("MetricFamily", (FakeFamily,), {"created": []})
    return types.SimpleNamespace(MetricFamily=family)


def series(pb: Any, name: str, **labels: str) -> FakeMetric:
    (found,) = [
        m
        for f in pb.MetricFamily.created
        if f.name == name
        for m in f.metrics
        if labels.items() <= m.labels.items()
    ]
    return found


def test_every_series_is_labelled_by_model_and_named_as_exported(pb: Any) -> None:
    metrics.Rejections(pb, "sam_session")
    metrics.SessionMetrics(pb, "sam_session")
    metrics.AutomaskMetrics(pb, "sam_automask")
    names = {f.name for f in pb.MetricFamily.created}
    base = {n for n in metrics.EXPORTED if not n.endswith(("_bucket", "_sum", "_count"))}
    assert names == base | set(metrics.HISTOGRAMS)
    assert all("model" in m.labels for f in pb.MetricFamily.created for m in f.metrics)


def test_rejections_count_by_reason(pb: Any) -> None:
    rejections = metrics.Rejections(pb, "sam_decoder")
    for reason in ("invalid", "invalid", "expired"):
        rejections.count(reason)
    counts = {r: series(pb, metrics.REJECTIONS, reason=r).value for r in metrics.REJECTION_REASONS}
    assert counts == {"invalid": 2, "not_found": 0, "overloaded": 0, "expired": 1, "internal": 0}


def test_cache_counters_move_by_what_happened_since_the_last_publish(pb: Any) -> None:
    session = metrics.SessionMetrics(pb, "sam_session")
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING.nbytes, ttl_seconds=60)
    for key in "abc":
        cache.put(key, EMBEDDING, (1, 1))  # "a" evicted
    cache.get("a"), cache.get("b")
    session.publish_cache(cache)
    cache.get("c")
    session.publish_cache(cache)
    session.publish_cache(cache)  # nothing new: nothing sent
    counters = {field: series(pb, name).value for field, name in metrics.CACHE_COUNTERS.items()}
    assert counters == {"hits": 2, "misses": 1, "evictions": 1, "expirations": 0}
    entries, nbytes = series(pb, metrics.CACHE_ENTRIES), series(pb, metrics.CACHE_BYTES)
    assert (entries.value, nbytes.value) == (2, 2 * EMBEDDING.nbytes)
    assert entries.sets == 1 and nbytes.sets == 1  # a gauge is sent only when it changed


def test_durations_are_histograms_with_their_buckets(pb: Any) -> None:
    session = metrics.SessionMetrics(pb, "sam_session")
    automask = metrics.AutomaskMetrics(pb, "sam_automask")
    session.embedded(0.2)
    session.clicked(0.004)
    automask.ran(3.5, masks=7)
    automask.ran(1.0, masks=0)
    assert series(pb, metrics.EMBED_DURATION).observed == [0.2]
    assert series(pb, metrics.CLICK_DURATION).buckets == list(metrics.REQUEST_BUCKETS)
    assert series(pb, metrics.AUTOMASK_DURATION).observed == [3.5, 1.0]
    assert series(pb, metrics.AUTOMASK_MASKS).value == 7


def test_embed_pending_follows_the_pool(pb: Any) -> None:
    session = metrics.SessionMetrics(pb, "sam_session")
    pool = EmbedPool(workers=1, max_pending=4, on_pending=session.embed_pending)
    gauge = series(pb, metrics.EMBED_PENDING)
    seen: list[float] = []
    pool.submit("a", lambda: seen.append(gauge.value))
    pool.shutdown()
    assert seen == [1] and gauge.value == 0


def test_a_stub_without_custom_metrics_serves_unmetered(pb: Any) -> None:
    """A Python-backend stub without ``MetricFamily`` (Triton before 23.01): the calls a request
    makes go through and record nothing, where the same calls on a metered stub are counted."""

    def serve(stub: Any) -> None:
        session = metrics.SessionMetrics(stub, "sam_session")
        session.publish_cache(EmbeddingCache(max_bytes=1, ttl_seconds=1))
        session.clicked(0.1)
        metrics.Rejections(stub, "sam_session").count("internal")

    serve(pb)
    assert series(pb, metrics.REJECTIONS, reason="internal").value == 1
    assert series(pb, metrics.CLICK_DURATION).observed == [0.1]
    bare = types.SimpleNamespace()
    serve(bare)
    assert vars(bare) == {}
