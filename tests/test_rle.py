"""sam_triton.rle against segment_anything's RLE helpers and pycocotools."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import segment_anything.utils.amg as amg_ref
import torch
from sam_triton import rle


def _random_masks(rng: np.random.Generator, batch: int, h: int, w: int) -> np.ndarray:
    masks = rng.random((batch, h, w)) < rng.random()
    if batch >= 3:
        masks[0] = True  # full mask: RLE starts with an empty 0-run
        masks[1] = False  # empty mask
        masks[2] = False
        masks[2, rng.integers(h), rng.integers(w)] = True  # one pixel
    return masks


@pytest.mark.parametrize("seed", range(6))
def test_masks_to_rle_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(20):
        masks = _random_masks(
            rng, int(rng.integers(0, 6)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        )
        ours = rle.masks_to_rle(masks)
        assert ours == amg_ref.mask_to_rle_pytorch(torch.from_numpy(masks))
        for r, m in zip(ours, masks, strict=True):
            assert rle.mask_to_rle(m) == r
            decoded = rle.rle_to_mask(r)
            assert decoded.flags.c_contiguous
            np.testing.assert_array_equal(decoded, amg_ref.rle_to_mask(r))
            np.testing.assert_array_equal(decoded, m)
            assert rle.area_from_rle(r) == amg_ref.area_from_rle(r) == int(m.sum())


def test_masks_to_rle_with_offset_equals_uncrop_then_encode() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        full_h, full_w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        x0, y0 = int(rng.integers(0, full_w)), int(rng.integers(0, full_h))
        x1, y1 = int(rng.integers(x0 + 1, full_w + 1)), int(rng.integers(y0 + 1, full_h + 1))
        masks = _random_masks(rng, 4, y1 - y0, x1 - x0)
        padded = amg_ref.uncrop_masks(torch.from_numpy(masks), [x0, y0, x1, y1], full_h, full_w)
        expected = amg_ref.mask_to_rle_pytorch(padded)
        assert rle.masks_to_rle(masks, offset=(x0, y0), image_size=(full_h, full_w)) == expected


def test_masks_to_rle_rejects_masks_outside_the_image() -> None:
    with pytest.raises(ValueError):
        rle.masks_to_rle(np.ones((1, 4, 4), bool), offset=(2, 0), image_size=(4, 5))
    with pytest.raises(ValueError):
        rle.masks_to_rle(np.ones((4, 4), bool))


def test_coco_strings_match_pycocotools_both_ways() -> None:
    rng = np.random.default_rng(2)
    for _ in range(80):
        masks = _random_masks(rng, 3, int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        for m, r in zip(masks, rle.masks_to_rle(masks), strict=True):
            coco = rle.rle_to_coco(r)
            assert coco == amg_ref.coco_encode_rle(r)  # pycocotools' frPyObjects string
            theirs = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            assert theirs["counts"].decode() == coco["counts"]
            np.testing.assert_array_equal(
                mask_utils.decode({"size": coco["size"], "counts": coco["counts"]}), m
            )
            assert rle.coco_to_rle(theirs) == r  # bytes counts, as pycocotools returns them
            assert rle.coco_to_rle(coco) == r


def test_coco_counts_large_and_negative_deltas_round_trip() -> None:
    counts = [0, 1_000_000_000, 5, 300_000_000, 1, 2, 4_000_000_000, 0, 7]
    assert rle.decode_coco_counts(rle.encode_coco_counts(counts)) == counts
    assert rle.encode_coco_counts([]) == ""
    with pytest.raises(ValueError):
        rle.decode_coco_counts("0_")  # ends inside a value
    with pytest.raises(ValueError):
        rle.coco_to_rle({"size": [2, 2], "counts": rle.encode_coco_counts([1, 2])})  # covers 3 of 4 pixels


def test_rle_validation() -> None:
    with pytest.raises(ValueError):
        rle.rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError):
        rle.rle_to_mask({"size": [2, 2], "counts": [5, -1]})
    with pytest.raises(ValueError):
        rle.rle_to_mask({"counts": [4]})


@pytest.mark.parametrize("shape", [(7, 5, 6), (2, 3, 4, 5), (4, 4), (0, 3, 3), (2, 0, 3)])
def test_batched_mask_to_box_matches_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    masks = rng.random(shape) < 0.1
    if len(shape) == 3 and shape[0] >= 3 and masks.size:
        masks[0] = False
        masks[1] = False
        masks[1, 2, 3] = True
        masks[2] = True
    expected = amg_ref.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    ours = rle.batched_mask_to_box(masks)
    assert ours.dtype == np.int64
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


def test_mask_to_box_xywh() -> None:
    mask = np.zeros((6, 8), bool)
    assert rle.mask_to_box_xywh(mask) == [0, 0, 0, 0]
    mask[2, 5] = True
    assert rle.mask_to_box_xywh(mask) == [5, 2, 0, 0]  # inclusive box: width 0, like the reference
    mask[4, 1] = True
    assert rle.mask_to_box_xywh(mask) == [1, 2, 4, 2]
