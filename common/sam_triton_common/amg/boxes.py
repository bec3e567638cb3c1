"""Box helpers and non-maximum suppression, numerically identical to the reference.

The automatic mask generator's output set is decided by NMS, so ``nms``/``batched_nms`` follow
torchvision's CPU kernel to the bit: float32 boxes and areas, the IoU formula evaluated in the
kernel's order, the IoU compared to the threshold in double precision, stable descending
score order, and the same re-ordering quirk of ``batched_nms`` above 1000 boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._torch_sort import torch_unstable_argsort_descending

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "box_xyxy_to_xywh",
    "box_area",
    "uncrop_boxes_xyxy",
    "uncrop_points",
    "uncrop_masks",
    "is_box_near_crop_edge",
    "nms",
    "batched_nms",
]

# torchvision switches from the "coordinate offset" trick to per-class NMS plus an unstable
# re-sort when boxes.numel() exceeds this on CPU (4 numbers per box, i.e. > 1000 boxes).
_VANILLA_NUMEL_CPU = 4000


def box_xyxy_to_xywh(boxes: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """(..., 4) XYXY -> XYWH, keeping the dtype (the reference's record ``bbox``/``crop_box``)."""
    arr = np.array(boxes, copy=True)
    arr[..., 2] = arr[..., 2] - arr[..., 0]
    arr[..., 3] = arr[..., 3] - arr[..., 1]
    return arr


def box_area(boxes: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """(x2 - x1) * (y2 - y1) of (N, 4) boxes, in their own dtype (torchvision's ``box_area``)."""
    arr = np.asarray(boxes)
    area: npt.NDArray[np.generic] = (arr[..., 2] - arr[..., 0]) * (arr[..., 3] - arr[..., 1])
    return area


def _offset_like(values: npt.NDArray[np.generic], offset: Sequence[int]) -> npt.NDArray[np.generic]:
    # Same dtype as the input: int boxes stay int, float32 boxes stay float32 (numpy would
    # otherwise promote float32 + int64 to float64, torch does not).
    return np.asarray(offset, dtype=values.dtype)


def uncrop_boxes_xyxy(boxes: npt.ArrayLike, crop_box: Sequence[int]) -> npt.NDArray[np.generic]:
    """Move (..., 4) XYXY boxes from a crop's frame to the image frame."""
    arr = np.asarray(boxes)
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    out: npt.NDArray[np.generic] = arr + _offset_like(arr, (x0, y0, x0, y0))
    return out


def uncrop_points(points: npt.ArrayLike, crop_box: Sequence[int]) -> npt.NDArray[np.generic]:
    """Move (..., 2) XY points from a crop's frame to the image frame."""
    arr = np.asarray(points)
    out: npt.NDArray[np.generic] = arr + _offset_like(arr, (int(crop_box[0]), int(crop_box[1])))
    return out


def uncrop_masks(
    masks: npt.ArrayLike, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> npt.NDArray[np.generic]:
    """Zero-pad (..., h, w) crop masks into the (..., orig_h, orig_w) image frame.

    The generator itself never calls this (``rle.masks_to_rle(offset=...)`` encodes crops
    in place); it is kept for callers porting code from ``segment_anything.utils.amg``.
    """
    arr = np.asarray(masks)
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return arr
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    widths = [(0, 0)] * (arr.ndim - 2) + [(y0, pad_y - y0), (x0, pad_x - x0)]
    return np.pad(arr, widths)


def is_box_near_crop_edge(
    boxes: npt.ArrayLike, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> BoolArray:
    """True for crop-frame XYXY boxes within ``atol`` of a crop edge that is not an image edge.

    Such masks were probably cut by the crop; a larger crop (or the full image) sees them whole.
    Compared in float32 like the reference's ``torch.isclose(..., rtol=0)``.
    """
    uncropped = uncrop_boxes_xyxy(np.asarray(boxes), crop_box).astype(np.float32)
    tol = np.float32(atol)
    crop = np.asarray(crop_box, dtype=np.float32)
    orig = np.asarray(orig_box, dtype=np.float32)
    near_crop = np.abs(uncropped - crop) <= tol
    near_image = np.abs(uncropped - orig) <= tol
    near: BoolArray = np.any(near_crop & ~near_image, axis=-1)
    return near


def _stable_descending_order(scores: npt.NDArray[np.generic]) -> Int64Array:
    # torchvision sorts with stable=True; torch puts NaN first in a descending sort.
    nan = np.isnan(scores)
    filled = np.where(nan, 0, scores)
    order: Int64Array = np.lexsort((-filled, ~nan)).astype(np.int64)
    return order


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float) -> Int64Array:
    """Greedy NMS exactly like ``torchvision.ops.nms`` on CPU; kept indices by descending score.

    A box is suppressed when its IoU with a kept, higher-ranked box is strictly greater than
    ``iou_threshold``; equal scores keep their input order.
    """
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    score = np.asarray(scores).reshape(-1)
    if score.shape[0] != arr.shape[0]:
        raise ValueError(f"{arr.shape[0]} boxes but {score.shape[0]} scores")
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = _stable_descending_order(score)
    x1, y1, x2, y2 = (np.ascontiguousarray(arr[order, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    n = order.size
    suppressed = np.zeros(n, dtype=np.bool_)
    zero = np.float32(0.0)
    keep: list[int] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            rest = slice(i + 1, n)
            # std::max/std::min semantics (the first operand wins ties and NaN comparisons).
            xx1 = np.where(x1[i] < x1[rest], x1[rest], x1[i])
            yy1 = np.where(y1[i] < y1[rest], y1[rest], y1[i])
            xx2 = np.where(x2[rest] < x2[i], x2[rest], x2[i])
            yy2 = np.where(y2[rest] < y2[i], y2[rest], y2[i])
            dw = xx2 - xx1
            dh = yy2 - yy1
            inter = np.where(zero < dw, dw, zero) * np.where(zero < dh, dh, zero)
            iou = inter / (areas[i] + areas[rest] - inter)
            # The kernel compares the float IoU with a double threshold.
            suppressed[rest] |= iou.astype(np.float64) > float(iou_threshold)
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, idxs: npt.ArrayLike, iou_threshold: float
) -> Int64Array:
    """``torchvision.ops.batched_nms`` on CPU: NMS within each category of ``idxs``.

    Up to 1000 boxes torchvision offsets each category's boxes so they cannot overlap and runs
    one NMS (result ordered by stable descending score). Above that it runs NMS per category
    and re-sorts the kept indices with torch's *unstable* sort; equal scores then come out in
    libstdc++ introsort order, which is reproduced here.
    """
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    score = np.asarray(scores).reshape(-1)
    cats = np.asarray(idxs).reshape(-1)
    if not (arr.shape[0] == score.shape[0] == cats.shape[0]):
        raise ValueError(f"{arr.shape[0]} boxes, {score.shape[0]} scores, {cats.shape[0]} categories")
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.size <= _VANILLA_NUMEL_CPU:
        max_coordinate = arr.max()
        offsets = cats.astype(np.float32) * (max_coordinate + np.float32(1.0))
        return nms(arr + offsets[:, None], score, iou_threshold)
    keep_mask = np.zeros(arr.shape[0], dtype=np.bool_)
    for category in np.unique(cats):
        members = np.flatnonzero(cats == category)
        keep_mask[members[nms(arr[members], score[members], iou_threshold)]] = True
    kept = np.flatnonzero(keep_mask)
    resorted = torch_unstable_argsort_descending(score[kept].tolist())
    out: Int64Array = kept[np.asarray(resorted, dtype=np.int64)]
    return out
