"""Mask quality score used to filter automatic masks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]

__all__ = ["calculate_stability_score"]


def calculate_stability_score(
    masks: npt.ArrayLike, mask_threshold: float, threshold_offset: float
) -> Float32Array:
    """IoU between the masks binarised at ``threshold +/- offset``, over the last two axes.

    The high-threshold mask is contained in the low-threshold one, so the IoU is a ratio of
    pixel counts. Like the reference: thresholds are applied to float32 logits in float32
    (torch casts the Python scalar to the tensor's dtype), counts are exact integers, and the
    ratio is a float32 division (0/0 -> NaN, which no ``>=`` filter keeps).
    """
    logits = np.asarray(masks, dtype=np.float32)
    if logits.ndim < 2:
        raise ValueError(f"expected (..., H, W) mask logits, got shape {logits.shape}")
    high = np.float32(mask_threshold + threshold_offset)
    low = np.float32(mask_threshold - threshold_offset)
    intersections = np.asarray(np.count_nonzero(logits > high, axis=(-2, -1)), dtype=np.float32)
    unions = np.asarray(np.count_nonzero(logits > low, axis=(-2, -1)), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        score: Float32Array = intersections / unions
    return score
