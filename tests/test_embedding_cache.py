"""The server-side embedding cache: byte bound, LRU order, sliding TTL, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sam_triton_server.backend.embedding_cache import CacheStats, EmbeddingCache

EMBEDDING = np.zeros((256, 64, 64), np.float32)  # 4 MiB, the size of every SAM embedding


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hit_and_miss() -> None:
    cache = EmbeddingCache(max_bytes=3 * EMBEDDING.nbytes, ttl_seconds=60)
    assert cache.put("a", EMBEDDING + 1, (683, 1024))
    entry = cache.get("a")
    assert entry is not None and entry.input_size == (683, 1024) and entry.embedding[0, 0, 0] == 1
    assert cache.get("b") is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_byte_bound_evicts_least_recently_used() -> None:
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING.nbytes, ttl_seconds=60)
    cache.put("a", EMBEDDING, (1, 1))
    cache.put("b", EMBEDDING, (1, 1))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", EMBEDDING, (1, 1))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 2 * EMBEDDING.nbytes and cache.stats.evictions == 1


def test_replacing_a_key_does_not_double_count() -> None:
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING.nbytes, ttl_seconds=60)
    for _ in range(5):
        cache.put("a", EMBEDDING, (1, 1))
    assert len(cache) == 1 and cache.nbytes == EMBEDDING.nbytes


def test_entry_larger_than_budget_is_refused() -> None:
    cache = EmbeddingCache(max_bytes=EMBEDDING.nbytes - 1, ttl_seconds=60)
    assert not cache.put("a", EMBEDDING, (1, 1))
    assert len(cache) == 0


def test_ttl_counts_from_last_use() -> None:
    clock = FakeClock()
    cache = EmbeddingCache(max_bytes=4 * EMBEDDING.nbytes, ttl_seconds=10, clock=clock)
    cache.put("active", EMBEDDING, (1, 1))
    cache.put("idle", EMBEDDING, (1, 1))
    for _ in range(3):
        clock.now += 6
        assert cache.get("active") is not None
    assert cache.get("idle") is None
    assert cache.stats.expirations == 1 and cache.nbytes == EMBEDDING.nbytes


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        EmbeddingCache(max_bytes=0, ttl_seconds=1)


def test_concurrent_use_keeps_the_bound() -> None:
    small = np.zeros(1024, np.float32)
    cache = EmbeddingCache(max_bytes=10 * small.nbytes, ttl_seconds=60)

    def worker(offset: int) -> None:
        for i in range(500):
            cache.put(f"{offset}-{i % 25}", small, (1, 1))
            cache.get(f"{(offset + 1) % 4}-{i % 25}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 10 and cache.nbytes == len(cache) * small.nbytes


def test_derived_features_count_against_the_budget() -> None:
    features = (np.ones((8, 16, 4096), np.float32), np.ones((8, 4096, 16), np.float32))
    entry_bytes = EMBEDDING.nbytes + sum(f.nbytes for f in features)
    cache = EmbeddingCache(max_bytes=2 * entry_bytes, ttl_seconds=60)
    assert cache.put("a", EMBEDDING, (1, 1), features)
    assert cache.put("b", EMBEDDING, (1, 1), features)
    entry = cache.get("a")
    assert entry is not None and entry.nbytes == entry_bytes and len(entry.features) == 2
    assert cache.nbytes == 2 * entry_bytes
    cache.put("c", EMBEDDING, (1, 1))  # a plain embedding still displaces the oldest entry
    assert cache.get("b") is None and cache.nbytes == entry_bytes + EMBEDDING.nbytes
    assert not EmbeddingCache(max_bytes=entry_bytes - 1, ttl_seconds=60).put("x", EMBEDDING, (1, 1), features)


def test_holds_neither_counts_nor_refreshes() -> None:
    clock = FakeClock()
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING.nbytes, ttl_seconds=10, clock=clock)
    cache.put("a", EMBEDDING, (1, 1))
    cache.put("b", EMBEDDING, (1, 1))
    assert cache.holds("a") and not cache.holds("c")
    cache.put("c", EMBEDDING, (1, 1))  # "a" is still the least recently used
    assert not cache.holds("a") and cache.holds("b")
    clock.now += 11
    assert not cache.holds("b")
    assert cache.snapshot() == (CacheStats(evictions=1, expirations=1), 1, EMBEDDING.nbytes)


def test_snapshot_counts_every_event() -> None:
    clock = FakeClock()
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING.nbytes, ttl_seconds=10, clock=clock)
    for key in "abc":  # "a" evicted
        cache.put(key, EMBEDDING, (1, 1))
    assert cache.get("b") is not None and cache.get("a") is None
    clock.now += 11
    assert cache.get("c") is None  # expired: an expiration and a miss
    stats, entries, nbytes = cache.snapshot()
    assert stats == CacheStats(hits=1, misses=2, evictions=1, expirations=1)
    assert (entries, nbytes) == (1, EMBEDDING.nbytes)
    cache.get("b")
    assert stats.misses == 2  # a snapshot is a copy
