"""Server-held image embeddings: an LRU cache bounded by bytes, with a time-to-live.

A vit embedding is 4 MiB (256x64x64 float32; 14 MiB with the decoder's image features);
holding it on the server turns every click of an interactive session into a request of a
few hundred bytes. The byte bound, not an
entry count, is what keeps a busy server inside its memory: whatever would exceed it is
evicted least-recently-used first, and an entry larger than the whole budget is refused.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt


@dataclass
class CachedEmbedding:
    embedding: npt.NDArray[np.float32]  # (256, 64, 64) float32
    input_size: tuple[int, int]  # (h, w) of the resized image, as the encoder saw it
    last_used: float  # the TTL counts from the last use: an active session never expires
    # Tensors derived from the embedding once, so each click does less (the decoder's
    # ``image_features``); empty when the server has none. They count against the budget.
    features: tuple[npt.NDArray[np.float32], ...] = ()

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + sum(f.nbytes for f in self.features)


@dataclass
class CacheStats:
    """Counts since the cache was created (the metrics publish their increments)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0


class EmbeddingCache:
    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0 or ttl_seconds <= 0:
            raise ValueError("max_bytes and ttl_seconds must be positive")
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, CachedEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        key: str,
        embedding: npt.NDArray[np.float32],
        input_size: tuple[int, int],
        features: tuple[npt.NDArray[np.float32], ...] = (),
    ) -> CachedEmbedding | None:
        """Store (or replace) ``key``: the new entry, or None when it alone exceeds the budget."""
        # A private copy: a BLS output array may be a view into the Python backend's shared
        # memory pool, which must not be pinned (or reused) for as long as the entry lives.
        entry = CachedEmbedding(
            np.array(embedding, dtype=np.float32, order="C"),
            input_size,
            self._clock(),
            tuple(np.ascontiguousarray(f, dtype=np.float32) for f in features),
        )
        if entry.nbytes > self.max_bytes:
            return None
        with self._lock:
            self._drop(key)
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.stats.evictions += 1
        return entry

    def get(self, key: str) -> CachedEmbedding | None:
        """The entry for ``key`` (refreshing its LRU position), or None when absent or expired;
        counted as a hit or a miss."""
        with self._lock:
            entry = self._live(key)
            if entry is None:
                self.stats.misses += 1
                return None
            entry.last_used = self._clock()
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry

    def holds(self, key: str) -> bool:
        """Whether ``key`` is held and unexpired, without counting a lookup or touching its LRU
        position (a request that then uses the entry does, with :meth:`get`)."""
        with self._lock:
            return self._live(key) is not None

    def snapshot(self) -> tuple[CacheStats, int, int]:
        """The counts, the number of entries and their bytes, read together."""
        with self._lock:
            return replace(self.stats), len(self._entries), self._bytes

    def _live(self, key: str) -> CachedEmbedding | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.last_used > self.ttl_seconds:
            self._drop(key)
            self.stats.expirations += 1
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes
