"""Run-length encoding of binary masks, and mask boxes, without torch or pycocotools.

Two encodings, both exactly those of the reference so records compare and decode anywhere:

* **Uncompressed RLE** ``{"size": [h, w], "counts": [...]}``: run lengths over the mask
  flattened in column-major (Fortran) order, starting with a run of zeros (possibly empty) -
  ``segment_anything.utils.amg.mask_to_rle_pytorch`` / ``rle_to_mask``.
* **COCO compressed RLE** ``{"size": [h, w], "counts": "<ascii>"}``: the same counts
  written as pycocotools' ``rleToString`` does (5-bit groups, ``+48``, deltas against the
  count two places earlier), so ``pycocotools.mask.decode`` reads our strings and we read
  theirs.

Boxes follow ``batched_mask_to_box``: XYXY with an *inclusive* right/bottom edge (a 1-pixel
mask at (x, y) has box ``[x, y, x, y]``, hence XYWH width 0) and ``[0, 0, 0, 0]`` for an
empty mask. That is the reference's record ``bbox`` (not pycocotools' ``toBbox``, which
counts the pixel itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]

__all__ = [
    "RLE",
    "CocoRLE",
    "masks_to_rle",
    "mask_to_rle",
    "rle_to_mask",
    "area_from_rle",
    "encode_coco_counts",
    "decode_coco_counts",
    "decode_coco_counts_array",
    "rle_to_coco",
    "coco_to_rle",
    "batched_mask_to_box",
    "mask_to_box_xywh",
]


class RLE(TypedDict):
    """Uncompressed RLE: ``size`` is ``[height, width]``; counts alternate 0-runs and 1-runs."""

    size: list[int]
    counts: list[int]


class CocoRLE(TypedDict):
    """pycocotools' compressed RLE with the counts as a ``str`` (JSON-serialisable)."""

    size: list[int]
    counts: str


def _as_bool_masks(masks: npt.ArrayLike, ndim: int) -> BoolArray:
    arr = np.asarray(masks)
    if arr.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D mask array, got shape {arr.shape}")
    # Non-bool input (0/1 uint8, float) means "nonzero is foreground", like torch's ``^``
    # on a bool tensor would after the reference's own thresholding.
    return arr if arr.dtype == np.bool_ else arr != 0


def masks_to_rle(
    masks: npt.ArrayLike,
    *,
    offset: tuple[int, int] = (0, 0),
    image_size: tuple[int, int] | None = None,
) -> list[RLE]:
    """Encode a batch of (B, h, w) masks as uncompressed RLEs.

    With ``image_size=(H, W)`` and ``offset=(x0, y0)`` each mask is encoded as if pasted at
    (x0, y0) into an all-False H x W image - ``uncrop_masks`` followed by
    ``mask_to_rle_pytorch`` - without materialising the full-size masks (automatic mask
    generation on crops would otherwise allocate B full images per batch).
    """
    arr = _as_bool_masks(masks, 3)
    batch, h, w = arr.shape
    full_h, full_w = (h, w) if image_size is None else (int(image_size[0]), int(image_size[1]))
    x0, y0 = int(offset[0]), int(offset[1])
    if x0 < 0 or y0 < 0 or x0 + w > full_w or y0 + h > full_h:
        raise ValueError(f"a {h}x{w} mask at offset {offset} does not fit in a {full_h}x{full_w} image")
    total = full_h * full_w
    if batch == 0:
        return []
    if h == 0 or w == 0:
        return [{"size": [full_h, full_w], "counts": [total]} for _ in range(batch)]

    # One row per image column (column-major order), framed by False so every run has both
    # a start and an end inside the row: transitions are where neighbours differ.
    columns = np.zeros((batch, w, h + 2), dtype=np.bool_)
    columns[:, :, 1:-1] = arr.transpose(0, 2, 1)
    mask_idx, col, pos = np.nonzero(columns[:, :, 1:] != columns[:, :, :-1])
    # Flat column-major index of the first pixel after each transition, in the full image.
    flat = (col.astype(np.int64) + x0) * full_h + (y0 + pos.astype(np.int64))

    # A run reaching the bottom of column c and one starting at the top of column c+1 are a
    # single run in the flattened image (only possible when the mask spans the full height):
    # the end and the start land on the same flat index, and both must go.
    dup = (flat[1:] == flat[:-1]) & (mask_idx[1:] == mask_idx[:-1])
    drop = np.zeros(flat.shape, dtype=np.bool_)
    drop[1:] |= dup
    drop[:-1] |= dup
    # A run ending at the very last pixel needs no transition: the trailing count covers it.
    drop |= flat == total
    flat = flat[~drop]
    mask_idx = mask_idx[~drop]

    bounds = np.searchsorted(mask_idx, np.arange(batch + 1))
    out: list[RLE] = []
    for b in range(batch):
        # A transition at flat index 0 (first pixel set) yields the reference's leading 0-run.
        edges = np.concatenate(([0], flat[bounds[b] : bounds[b + 1]], [total]))
        out.append({"size": [full_h, full_w], "counts": np.diff(edges).tolist()})
    return out


def mask_to_rle(mask: npt.ArrayLike) -> RLE:
    """Encode one (H, W) mask as an uncompressed RLE."""
    return masks_to_rle(_as_bool_masks(mask, 2)[None])[0]


def _size_and_counts(rle: Mapping[str, Any]) -> tuple[int, int, Int64Array]:
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an uncompressed RLE ({{'size': [h, w], 'counts': [...]}}): {exc}") from exc
    if h < 0 or w < 0:
        raise ValueError(f"RLE size must be non-negative, got {[h, w]}")
    if counts.size and counts.min() < 0:
        raise ValueError("RLE counts must be non-negative")
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}*{w}={h * w}")
    return h, w, counts


def rle_to_mask(rle: Mapping[str, Any]) -> BoolArray:
    """Decode an uncompressed RLE into a C-ordered (H, W) bool mask."""
    h, w, counts = _size_and_counts(rle)
    values = np.zeros(counts.size, dtype=np.bool_)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def area_from_rle(rle: Mapping[str, Any]) -> int:
    """Foreground pixel count: the sum of the 1-runs."""
    return int(sum(int(c) for c in rle["counts"][1::2]))


# pycocotools' string format (maskApi.c rleToString / rleFrString): each value is written as
# little-endian 5-bit groups, a 0x20 flag on every group but the last, 0x10 of the last group
# being the sign; characters are group + 48. Values after the third are stored as the
# difference to the count two positions earlier (same-colour runs have similar lengths).
_GROUP_BITS = 5
_MAX_GROUPS = 13  # ceil(64 / 5): enough for any int64


def encode_coco_counts(counts: Sequence[int] | npt.ArrayLike) -> str:
    """pycocotools' compressed string for a list of RLE counts."""
    cnts = np.asarray(counts, dtype=np.int64).reshape(-1)
    values = cnts.copy()
    values[3:] -= cnts[1:-2]
    if values.size == 0:
        return ""
    groups: list[Int64Array] = []
    present: list[BoolArray] = []
    alive = np.ones(values.shape, dtype=np.bool_)
    rest = values
    for _ in range(_MAX_GROUPS):
        group = rest & 0x1F
        rest = rest >> _GROUP_BITS  # arithmetic shift, like C's on a signed long
        # More groups follow unless what is left is pure sign extension of this group.
        more = np.where((group & 0x10) != 0, rest != -1, rest != 0)
        groups.append(group | np.where(more, 0x20, 0))
        present.append(alive)
        alive = alive & more
        if not alive.any():
            break
    chars = np.stack(groups, axis=1) + 48
    # Row-major boolean selection keeps each value's groups together and in order.
    return chars[np.stack(present, axis=1)].astype(np.uint8).tobytes().decode("ascii")


def decode_coco_counts(counts: str | bytes) -> list[int]:
    """RLE counts from pycocotools' compressed string (``str`` or the ``bytes`` it returns)."""
    result: list[int] = decode_coco_counts_array(counts).tolist()
    return result


def decode_coco_counts_array(counts: str | bytes) -> Int64Array:
    """:func:`decode_coco_counts` as an int64 array (no Python list for a mask of many runs)."""
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.min() < 0 or chars.max() > 0x3F:
        raise ValueError("not a COCO compressed RLE string: character outside '0'..'o'")
    last = (chars & 0x20) == 0
    if not last[-1]:
        raise ValueError("truncated COCO compressed RLE string")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group_of_char = np.repeat(np.arange(starts.size), ends - starts + 1)
    shift = (np.arange(chars.size) - starts[group_of_char]) * _GROUP_BITS
    if shift.max() >= 64:
        raise ValueError("COCO compressed RLE value does not fit in 64 bits")
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    # Sign-extend values whose last group has its 0x10 bit set.
    negative = (chars[ends] & 0x10) != 0
    width = shift[ends] + _GROUP_BITS
    values[negative] |= np.left_shift(np.int64(-1), width[negative])
    # Undo the delta coding: the values at odd and at even (>= 2) positions each form a
    # running sum.
    out = values.copy()
    out[1::2] = np.cumsum(values[1::2])
    out[2::2] = np.cumsum(values[2::2])
    return out


def rle_to_coco(rle: Mapping[str, Any]) -> CocoRLE:
    """Compress an uncompressed RLE into COCO's string form (``pycocotools`` ``frPyObjects``)."""
    h, w, counts = _size_and_counts(rle)
    return {"size": [h, w], "counts": encode_coco_counts(counts)}


def coco_to_rle(coco: Mapping[str, Any]) -> RLE:
    """Expand a COCO compressed RLE (``counts`` as ``str`` or ``bytes``) into an uncompressed RLE."""
    try:
        h, w = (int(v) for v in coco["size"])
        raw = coco["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE ({{'size': [h, w], 'counts': str}}): {exc}") from exc
    if not isinstance(raw, str | bytes):
        raise ValueError("COCO RLE counts must be a str or bytes; use rle_to_mask for uncompressed RLEs")
    out: RLE = {"size": [h, w], "counts": decode_coco_counts(raw)}
    _size_and_counts(out)  # validates that the runs cover the image exactly
    return out


def batched_mask_to_box(masks: npt.ArrayLike) -> Int64Array:
    """XYXY int64 boxes (inclusive max) around (..., H, W) masks; ``[0, 0, 0, 0]`` when empty."""
    arr = np.asarray(masks)
    if arr.ndim < 2:
        raise ValueError(f"expected (..., H, W) masks, got shape {arr.shape}")
    arr = arr if arr.dtype == np.bool_ else arr != 0
    lead = arr.shape[:-2]
    if arr.size == 0:
        return np.zeros((*lead, 4), dtype=np.int64)
    h, w = arr.shape[-2:]
    rows = arr.any(axis=-1)  # (..., H): which rows hold a pixel
    cols = arr.any(axis=-2)  # (..., W)
    # argmax finds the first True; on the reversed axis it finds the last one.
    top = rows.argmax(axis=-1)
    bottom = h - 1 - rows[..., ::-1].argmax(axis=-1)
    left = cols.argmax(axis=-1)
    right = w - 1 - cols[..., ::-1].argmax(axis=-1)
    boxes: Int64Array = np.stack([left, top, right, bottom], axis=-1).astype(np.int64)
    boxes[~rows.any(axis=-1)] = 0
    return boxes


def mask_to_box_xywh(mask: npt.ArrayLike) -> list[int]:
    """The reference record ``bbox`` of one (H, W) mask: XYWH from the inclusive XYXY box."""
    x0, y0, x1, y1 = batched_mask_to_box(_as_bool_masks(mask, 2))
    return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]
