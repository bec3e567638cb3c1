"""The compact mask encoding (``sam_triton_common.mask_codec``) and the server's store of kept
logits (``backend.prediction_store``), without a server: exact round trips, the smaller
encoding chosen, corrupt bytes refused, the store's bounds and identity checks."""

from __future__ import annotations

import numpy as np
import pytest
from sam_triton_common import mask_codec
from sam_triton_common.transforms import postprocess_to_masks, preprocess_shape
from sam_triton_server.backend.prediction_store import PredictionNotFound, PredictionStore


def _object_masks(h: int, w: int, seed: int) -> np.ndarray:
    """Three masks as SAM makes them: logits of blobs, upscaled and thresholded."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    low = np.stack(
        [20 - np.hypot(xx - rng.uniform(0, 256), yy - rng.uniform(0, 256)) / (j + 1) for j in range(3)]
    )
    return postprocess_to_masks(
        low + rng.standard_normal(low.shape).astype(np.float32), preprocess_shape(h, w), (h, w)
    )


@pytest.mark.parametrize("size", [(17, 23), (23, 17), (1411, 1411), (9, 1500), (1500, 9), (1, 1)])
def test_object_masks_round_trip_exactly_as_runs(size: tuple[int, int]) -> None:
    masks = _object_masks(*size, seed=sum(size))
    encoded = mask_codec.encode_masks(masks)
    assert len(encoded) == 3 and all(mask_codec.mask_shape(e) == size for e in encoded)
    decoded = mask_codec.decode_masks(encoded, (3,))
    assert decoded.dtype == np.bool_ and decoded.shape == masks.shape
    np.testing.assert_array_equal(decoded, masks)
    if size == (1411, 1411):  # an object's mask: runs, far below its bit-packed size
        assert all(e[:1] == mask_codec.RUNS for e in encoded)
        assert max(len(e) for e in encoded) * 20 < (1411 * 1411) // 8


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        np.indices((31, 33)).sum(axis=0) % 2 == 0,  # a checkerboard: every pixel is a run
        np.random.default_rng(0).random((64, 80)) < 0.5,
        np.eye(6, 9, dtype=bool),
        np.zeros((0, 4), bool),
    ],
    ids=["empty", "full", "checkerboard", "noise", "diagonal", "no-pixels"],
)
def test_any_mask_round_trips_in_the_smaller_encoding(mask: np.ndarray) -> None:
    encoded = mask_codec.encode_mask(mask)
    np.testing.assert_array_equal(mask_codec.decode_mask(encoded), mask)
    packed_size = 9 + (mask.size + 7) // 8
    assert len(encoded) <= packed_size
    if mask.size >= 64 and (mask.all() or not mask.any()):
        assert encoded[:1] == mask_codec.RUNS and len(encoded) < 16
    if mask.shape == (31, 33):
        assert encoded[:1] == mask_codec.BITS


def test_masks_of_any_dtype_mean_nonzero() -> None:
    mask = np.array([[0, 2, 0], [1, 0, 0]], np.uint8)
    np.testing.assert_array_equal(mask_codec.decode_mask(mask_codec.encode_mask(mask)), mask != 0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"r\x01\x00",
        b"x" + b"\x02\x00\x00\x00\x02\x00\x00\x00" + b"\x00",
        b"b" + b"\x04\x00\x00\x00" * 2 + b"\x00",
    ],
    ids=["empty", "short-header", "unknown-kind", "short-bits"],
)
def test_corrupt_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        mask_codec.decode_mask(data)


def test_runs_that_do_not_cover_the_mask_are_refused() -> None:
    block = np.zeros((40, 40), bool)
    block[10:20, 5:30] = True
    good = mask_codec.encode_mask(block)
    assert good[:1] == mask_codec.RUNS
    with pytest.raises(ValueError, match="truncated"):
        mask_codec.decode_mask(good[:-1])
    wider = mask_codec.encode_mask(np.zeros((40, 41), bool))[:9] + good[9:]  # runs of 40x40
    with pytest.raises(ValueError, match="do not cover"):
        mask_codec.decode_mask(wider)
    with pytest.raises(ValueError):
        mask_codec.decode_masks([good, mask_codec.encode_mask(np.eye(4, dtype=bool))], (2,))


# ----------------------------------------------------------------------------- the server's store


def _logits(prompts: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((prompts, 3, 256, 256)).astype(np.float32)


class _Entry:
    """Stands for a session's cache entry (the store keeps only a weak reference)."""


def test_store_gives_back_the_exact_logits_of_each_prompt() -> None:
    store, entry, logits = PredictionStore(64 << 20), _Entry(), _logits(2, 0)
    ids = store.keep("user-a", entry, logits)
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    np.testing.assert_array_equal(store.mask("user-a", entry, ids[1], 2), logits[1, 2])
    with pytest.raises(IndexError, match="refine_mask 3"):
        store.mask("user-a", entry, ids[0], 3)
    with pytest.raises(PredictionNotFound, match="prediction not found"):
        store.mask("user-a", entry, "never-made", 0)


def test_store_refuses_another_session_or_a_rebound_image() -> None:
    store, entry = PredictionStore(64 << 20), _Entry()
    (pid,) = store.keep("user-a", entry, _logits(1, 1))
    with pytest.raises(PredictionNotFound, match="another image"):
        store.mask("user-b", entry, pid, 0)
    with pytest.raises(PredictionNotFound, match="another image"):
        store.mask("user-a", _Entry(), pid, 0)  # the id now names another embedding
    # a content id names the pixels: its predictions outlive an eviction and re-embed
    (content,) = store.keep("sha256:abc", entry, _logits(1, 2))
    store.mask("sha256:abc", _Entry(), content, 0)


def test_store_is_bounded_by_bytes_least_recently_used_first() -> None:
    one = 3 * 256 * 256 * 4
    store, entry = PredictionStore(2 * one), _Entry()
    first, second = (store.keep("s", entry, _logits(1, i))[0] for i in range(2))
    store.mask("s", entry, first, 0)  # used: the second is now the oldest
    (third,) = store.keep("s", entry, _logits(1, 3))
    assert len(store) == 2 and store.nbytes == 2 * one
    with pytest.raises(PredictionNotFound):
        store.mask("s", entry, second, 0)
    store.mask("s", entry, first, 0)
    store.mask("s", entry, third, 0)
    # a prediction larger than the whole budget is not kept at all
    small = PredictionStore(one - 1)
    (huge,) = small.keep("s", entry, _logits(1, 4))
    assert len(small) == 0 and small.nbytes == 0
    with pytest.raises(PredictionNotFound):
        small.mask("s", entry, huge, 0)


def test_a_fragmented_mask_is_never_larger_than_its_logits() -> None:
    """Noise-like logits (random weights) at 12 Mpx: the mask travels as its logits, and the
    reader makes the very same mask from them."""
    low = np.random.default_rng(5).standard_normal((2, 256, 256)).astype(np.float32)
    size, input_size = (3000, 4000), preprocess_shape(3000, 4000)
    encoded = mask_codec.encode_prediction(low, input_size, size)
    assert [e[:1] for e in encoded] == [mask_codec.LOGITS] * 2
    assert all(len(e) == 17 + 256 * 256 * 4 for e in encoded)
    np.testing.assert_array_equal(
        mask_codec.decode_masks(encoded, (2,)), postprocess_to_masks(low, input_size, size)
    )
    # a small image of the same logits: its runs are smaller than the logits
    small = mask_codec.encode_prediction(low, preprocess_shape(30, 40), (30, 40))
    assert all(e[:1] != mask_codec.LOGITS for e in small)
