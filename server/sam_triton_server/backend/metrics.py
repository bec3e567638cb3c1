"""Service metrics on Triton's metrics port (Prometheus text at ``/metrics``), from the models.

Triton counts requests, queue and compute time per model (``nv_inference_*``); what only the
models know is exported here through the Python backend's custom metrics API
(``pb_utils.MetricFamily``): the session cache, embed and click latencies, automask work, and
why requests were refused. Every series carries a ``model`` label.

Each metric operation is an IPC message from the stub to Triton, so a request touches only a
few series, and gauges are set only when their value changed. ``pb`` (Triton's
``triton_python_backend_utils``) is passed in: the unit tests drive these classes with a fake.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import astuple, fields
from typing import Any

from sam_triton_server.backend.embedding_cache import CacheStats, EmbeddingCache
from sam_triton_server.backend.video_sessions import VideoSessionStore

# Histogram upper bounds, seconds: a click takes milliseconds, an embed tens of milliseconds to
# seconds (CPU), an automask run seconds to minutes.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
AUTOMASK_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REJECTION_REASONS = ("invalid", "not_found", "overloaded", "expired", "internal")

REJECTIONS = "sam_rejections_total"
CACHE_ENTRIES = "sam_cache_entries"
CACHE_BYTES = "sam_cache_bytes"
CACHE_COUNTERS = {  # CacheStats field -> metric
    "hits": "sam_cache_hits_total",
    "misses": "sam_cache_misses_total",
    "evictions": "sam_cache_evictions_total",
    "expirations": "sam_cache_expirations_total",
}
EMBED_PENDING = "sam_embed_pending"
EMBED_DURATION = "sam_embed_duration_seconds"
CLICK_DURATION = "sam_click_duration_seconds"
AUTOMASK_DURATION = "sam_automask_duration_seconds"
AUTOMASK_MASKS = "sam_automask_masks_total"

HISTOGRAMS = (EMBED_DURATION, CLICK_DURATION, AUTOMASK_DURATION)
EXPORTED = (
    REJECTIONS,
    CACHE_ENTRIES,
    CACHE_BYTES,
    *CACHE_COUNTERS.values(),
    EMBED_PENDING,
    *(f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
    AUTOMASK_MASKS,
)
"""Every series name these classes put on the metrics port (histograms as Prometheus writes them)."""

VIDEO_SESSIONS = "sam_video_sessions"
VIDEO_OBJECTS = "sam_video_objects"
VIDEO_BYTES = "sam_video_bytes"
VIDEO_FRAMES_DROPPED = "sam_video_frames_dropped_total"
VIDEO_FRAME_DURATION = "sam_video_frame_duration_seconds"
VIDEO_SESSION_ENDS = "sam_video_session_ends_total"
VIDEO_EXPORTED = (
    VIDEO_SESSIONS,
    VIDEO_OBJECTS,
    VIDEO_BYTES,
    VIDEO_FRAMES_DROPPED,
    VIDEO_SESSION_ENDS,
    *(f"{VIDEO_FRAME_DURATION}{suffix}" for suffix in ("_bucket", "_sum", "_count")),
)
"""``sam_video``'s series (SAM 2 repositories only, so apart from EXPORTED, which every server
shows): frames tracked are the frame histogram's count."""


class _Families:
    """Creates this model's series, keeping each family alive as long as its metrics (Triton
    refuses an operation on a metric whose family was deleted)."""

    def __init__(self, pb: Any, model: str) -> None:
        self._pb = pb
        self._model = model
        self._families: list[Any] = []

    def metric(
        self,
        name: str,
        description: str,
        kind: str,
        labels: dict[str, str] | None = None,
        buckets: Sequence[float] | None = None,
    ) -> Any:
        family_cls = getattr(self._pb, "MetricFamily", None)
        if family_cls is None:  # a stub without custom metrics (before Triton 23.01): serve unmetered
            return _Unmetered()
        family = family_cls(name=name, description=description, kind=getattr(family_cls, kind))
        self._families.append(family)
        all_labels = {"model": self._model, **(labels or {})}
        if buckets is None:
            return family.Metric(labels=all_labels)
        return family.Metric(labels=all_labels, buckets=list(buckets))


class _Unmetered:
    def increment(self, value: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


class Rejections:
    """Refused requests by reason, one counter per reason (every model has one)."""

    def __init__(self, pb: Any, model: str) -> None:
        families = _Families(pb, model)
        self._families = families
        self._counters = {
            reason: families.metric(
                REJECTIONS,
                "Requests answered with an error, by reason: invalid (INVALID_ARGUMENT), not_found "
                "(e.g. an embedding not held), overloaded (embed backlog full), expired (deadline "
                "passed before the work started), internal",
                "COUNTER",
                {"reason": reason},
            )
            for reason in REJECTION_REASONS
        }

    def count(self, reason: str) -> None:
        self._counters[reason].increment(1)


class SessionMetrics:
    """``sam_session``: the embedding cache, the embed pool's backlog, embed and click latency."""

    def __init__(self, pb: Any, model: str) -> None:
        families = _Families(pb, model)
        self._families = families
        self._entries = families.metric(CACHE_ENTRIES, "Embeddings held in the session cache", "GAUGE")
        self._bytes = families.metric(CACHE_BYTES, "Bytes held in the session cache", "GAUGE")
        self._cache_counters = {
            field: families.metric(metric, f"Session cache {field}: {_CACHE_EVENTS[field]}", "COUNTER")
            for field, metric in CACHE_COUNTERS.items()
        }
        self._pending = families.metric(
            EMBED_PENDING,
            "Embeds running or waiting in the embed pool (bounded by embed_queue_size)",
            "GAUGE",
        )
        self._embed = families.metric(
            EMBED_DURATION,
            "Embed requests answered through the embed pool (an image already held by content id is "
            "answered at once, as a cache hit), seconds from arrival (pool wait included) to the answer",
            "HISTOGRAM",
            buckets=REQUEST_BUCKETS,
        )
        self._click = families.metric(
            CLICK_DURATION,
            "Clicks (prompt requests on a held embedding) answered, seconds from arrival in the model "
            "(its click-lane wait included; the model has no Triton queue in front of it) to the answer",
            "HISTOGRAM",
            buckets=REQUEST_BUCKETS,
        )
        self._lock = threading.Lock()
        self._published = CacheStats()
        self._shown: dict[str, int] = {}

    def publish_cache(self, cache: EmbeddingCache) -> None:
        """Bring the cache series up to date: counters move by what happened since the last call."""
        with self._lock:  # snapshots taken and published in order: deltas are never negative
            stats, entries, nbytes = cache.snapshot()
            for field, now, before in zip(
                fields(CacheStats), astuple(stats), astuple(self._published), strict=True
            ):
                if now > before:
                    self._cache_counters[field.name].increment(now - before)
            self._published = stats
            self._set(self._entries, "entries", entries)
            self._set(self._bytes, "bytes", nbytes)

    def embed_pending(self, pending: int) -> None:
        with self._lock:
            self._set(self._pending, "pending", pending)

    def embedded(self, seconds: float) -> None:
        self._embed.observe(seconds)

    def clicked(self, seconds: float) -> None:
        self._click.observe(seconds)

    def _set(self, gauge: Any, key: str, value: int) -> None:
        if self._shown.get(key) != value:
            gauge.set(value)
            self._shown[key] = value


_CACHE_EVENTS = {
    "hits": "requests whose session's embedding was held",
    "misses": "requests whose session's embedding was not held (then embedded, or NOT_FOUND)",
    "evictions": "embeddings dropped, least recently used first, to stay within cache_bytes",
    "expirations": "embeddings dropped because unused for cache_ttl_seconds",
}


class VideoMetrics:
    """``sam_video``: sessions, objects and bytes held, frames tracked (with how long each took
    from arrival) and live frames dropped, sessions ended by why."""

    def __init__(self, pb: Any, model: str) -> None:
        families = _Families(pb, model)
        self._families = families
        self._sessions = families.metric(VIDEO_SESSIONS, "Video tracking sessions held", "GAUGE")
        self._objects = families.metric(VIDEO_OBJECTS, "Objects tracked across the held sessions", "GAUGE")
        self._bytes = families.metric(
            VIDEO_BYTES, "Bytes held by video sessions (memories, features)", "GAUGE"
        )
        self._dropped = families.metric(
            VIDEO_FRAMES_DROPPED, "Live frames not tracked because their deadline passed first", "COUNTER"
        )
        self._frame = families.metric(
            VIDEO_FRAME_DURATION,
            "Frames tracked, seconds from arrival in the model (its wait for its turn included) "
            "to the answer",
            "HISTOGRAM",
            buckets=REQUEST_BUCKETS,
        )
        self._ends = {
            why: families.metric(
                VIDEO_SESSION_ENDS, f"Video sessions ended: {text}", "COUNTER", {"reason": why}
            )
            for why, text in _VIDEO_ENDS.items()
        }
        self._lock = threading.Lock()
        self._shown: dict[str, int] = {}
        self._ended = {why: 0 for why in _VIDEO_ENDS}

    def publish(self, sessions: VideoSessionStore[Any]) -> None:
        with self._lock:
            self._set(self._sessions, "sessions", len(sessions))
            self._set(self._objects, "objects", sessions.objects())
            self._set(self._bytes, "bytes", sessions.nbytes)
            for why in _VIDEO_ENDS:
                now = getattr(sessions.stats, why)
                if now > self._ended[why]:
                    self._ends[why].increment(now - self._ended[why])
                    self._ended[why] = now

    def tracked(self, seconds: float) -> None:
        self._frame.observe(seconds)

    def dropped(self) -> None:
        self._dropped.increment(1)

    def _set(self, gauge: Any, key: str, value: int) -> None:
        if self._shown.get(key) != value:
            gauge.set(value)
            self._shown[key] = value


_VIDEO_ENDS = {
    "closed": "closed by their client",
    "expired": "dropped after ttl_seconds without a request",
    "evicted": "dropped, least recently used first, to keep the sessions within max_bytes",
}


class AutomaskMetrics:
    """``sam_automask``: run durations (the histogram's count is the number of runs) and masks."""

    def __init__(self, pb: Any, model: str) -> None:
        families = _Families(pb, model)
        self._families = families
        self._duration = families.metric(
            AUTOMASK_DURATION,
            "Automask runs answered, seconds in the model",
            "HISTOGRAM",
            buckets=AUTOMASK_BUCKETS,
        )
        self._masks = families.metric(AUTOMASK_MASKS, "Masks returned by automask runs", "COUNTER")

    def ran(self, seconds: float, masks: int) -> None:
        self._duration.observe(seconds)
        if masks:
            self._masks.increment(masks)
