"""Overlay rendering and RGBA cut-outs."""

from __future__ import annotations

import numpy as np
import pytest
from sam_triton.render import PALETTE, cutout, overlay


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 15:45] = True
    return image, mask


def test_overlay_colours_mask_and_keeps_background() -> None:
    image, mask = _scene()
    out = np.asarray(overlay(image, mask[None], alpha=0.5))
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # untouched outside
    inner = out[15, 30].astype(int)
    expected = (0.5 * 100 + 0.5 * np.array(PALETTE[0]) + 0.5).astype(int)
    np.testing.assert_array_equal(inner, expected)
    np.testing.assert_array_equal(out[10, 30], PALETTE[0])  # outline in full colour


def test_overlay_draws_prompts_and_several_masks() -> None:
    image, mask = _scene()
    other = np.zeros_like(mask)
    other[25:35, 5:15] = True
    out = np.asarray(
        overlay(
            image,
            np.stack([mask, other]),
            point_coords=[[30, 15], [50, 30]],
            point_labels=[1, 0],
            box=[15, 10, 45, 20],
        )
    )
    assert tuple(out[15, 30]) == (40, 220, 60)  # positive point: green
    assert tuple(out[30, 50]) == (235, 40, 40)  # negative point: red
    np.testing.assert_array_equal(out[25, 5], PALETTE[1])  # second mask's colour


def test_overlay_accepts_logits_and_rejects_wrong_sizes() -> None:
    image, mask = _scene()
    logits = np.where(mask, 3.0, -3.0).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(overlay(image, logits)), np.asarray(overlay(image, mask)))
    with pytest.raises(ValueError, match="expected"):
        overlay(image, np.zeros((1, 10, 10), bool))
    with pytest.raises(ValueError, match="RGB"):
        overlay(image[..., 0], mask)


def test_cutout() -> None:
    image, mask = _scene()
    image[10:20, 15:45] = [1, 2, 3]
    cut = cutout(image, mask)
    assert cut.mode == "RGBA" and cut.size == (30, 10)
    arr = np.asarray(cut)
    assert (arr[..., 3] == 255).all() and (arr[..., :3] == [1, 2, 3]).all()
    full = np.asarray(cutout(image, mask, crop=False))
    assert full.shape == (40, 60, 4)
    assert full[0, 0, 3] == 0 and full[15, 20, 3] == 255
    assert cutout(image, np.zeros_like(mask)).size == (1, 1)
    with pytest.raises(ValueError, match="one mask"):
        cutout(image, np.stack([mask, mask]))
