"""Compact binary masks for the wire: what ``sam_session`` sends instead of low-res logits.

One mask is one ``bytes`` value, written by the server and read by the SDK with this same
module, so both sides agree to the bit:

    byte 0      the encoding: ``b"r"`` (run lengths) or ``b"b"`` (bit-packed)
    bytes 1-8   height and width, two little-endian uint32
    the rest    the payload

- ``r``: the mask's run lengths in row-major (C) order, starting with a run of zeros (possibly
  empty), written as pycocotools' compressed counts string (:func:`~sam_triton_common.rle.
  encode_coco_counts`: 5-bit groups, deltas). Row-major, unlike COCO's column-major RLE,
  because a row-major scan needs no transpose of a full-size mask (several times faster).
- ``b``: ``numpy.packbits`` of the row-major mask (most significant bit first), ceil(H*W/8) bytes.
- ``l``: the mask's own 256x256 float32 low-res logits (little-endian), after the resized
  input's height and width (two more uint32; 0, 0 for SAM 2): the reader makes the mask with
  :func:`~sam_triton_common.transforms.postprocess_to_masks`, the code the writer used.

:func:`encode_mask` writes whichever is smallest for that mask: an object's mask is a few runs
per row and RLE wins by far (1-10 KB for a 1411x1411 photo's mask against 249 KB packed);
a mask as fragmented as noise (random weights make such masks) is at most its bit-packed size
and, given its logits (:func:`encode_prediction`), never more than those 256 KiB: a compact
answer is never larger than the logits it replaces.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from .contract import LOW_RES_SIZE
from .rle import decode_coco_counts_array, encode_coco_counts
from .transforms import postprocess_to_masks

RUNS = b"r"
BITS = b"b"
LOGITS = b"l"
_HEADER = struct.Struct("<cII")
_INPUT_SIZE = struct.Struct("<II")
_LOGITS_BYTES = LOW_RES_SIZE * LOW_RES_SIZE * 4

BoolArray = npt.NDArray[np.bool_]


def _row_major_counts(flat: BoolArray) -> npt.NDArray[np.int64]:
    """Alternating run lengths of a flat mask, the first one a (possibly empty) run of zeros."""
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts_on = flat.size > 0 and bool(flat[0])
    bounds = np.concatenate(([0], edges, [flat.size])).astype(np.int64)
    counts = np.diff(bounds)
    return np.concatenate(([0], counts)) if starts_on else counts


def encode_mask(
    mask: npt.ArrayLike,
    logits: npt.NDArray[np.float32] | None = None,
    input_size: tuple[int, int] = (0, 0),
) -> bytes:
    """One (H, W) mask (bool, or nonzero = foreground) as compact bytes: RLE or bit-packed, or
    with ``logits`` (the (256, 256) logits it was made from with ``input_size``) those,
    whichever is smallest."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"expected one (H, W) mask, got shape {arr.shape}")
    flat = np.ascontiguousarray(arr if arr.dtype == np.bool_ else arr != 0).reshape(-1)
    height, width = (int(v) for v in arr.shape)
    limit = (flat.size + 7) // 8  # the payload to beat: bit-packed
    if logits is not None:
        limit = min(limit, _INPUT_SIZE.size + _LOGITS_BYTES)
    counts = _row_major_counts(flat)
    # Each count takes at least one character of the string: skip writing it when too many.
    if counts.size < limit:
        runs = encode_coco_counts(counts).encode("ascii")
        if len(runs) <= limit:
            return _HEADER.pack(RUNS, height, width) + runs
    if logits is not None and _INPUT_SIZE.size + _LOGITS_BYTES < (flat.size + 7) // 8:
        raw = np.ascontiguousarray(logits, dtype="<f4").reshape(LOW_RES_SIZE, LOW_RES_SIZE)
        return _HEADER.pack(LOGITS, height, width) + _INPUT_SIZE.pack(*input_size) + raw.tobytes()
    return _HEADER.pack(BITS, height, width) + np.packbits(flat).tobytes()


def encode_prediction(
    logits: npt.NDArray[np.float32], input_size: tuple[int, int], original_size: tuple[int, int]
) -> list[bytes]:
    """The masks of one prompt's (M, 256, 256) logits at ``original_size``, each encoded as
    :func:`encode_mask` does given its logits (the masks are ``postprocess_to_masks``')."""
    masks = postprocess_to_masks(logits, input_size, original_size)
    return [encode_mask(mask, low, input_size) for mask, low in zip(masks, logits, strict=True)]


def encode_masks(masks: npt.ArrayLike) -> list[bytes]:
    """Each mask of a (..., H, W) stack, in row-major order of the leading dimensions."""
    arr = np.asarray(masks)
    if arr.ndim < 2:
        raise ValueError(f"expected (..., H, W) masks, got shape {arr.shape}")
    return [encode_mask(m) for m in arr.reshape(-1, *arr.shape[-2:])]


def mask_shape(data: bytes) -> tuple[int, int]:
    """(H, W) of an encoded mask, without decoding it."""
    if len(data) < _HEADER.size:
        raise ValueError(f"an encoded mask has at least {_HEADER.size} bytes, got {len(data)}")
    _, height, width = _HEADER.unpack_from(data)
    return int(height), int(width)


def decode_mask(data: bytes) -> BoolArray:
    """The (H, W) bool mask of :func:`encode_mask`'s bytes; ValueError when they are not one."""
    height, width = mask_shape(data)
    kind, payload, size = data[:1], data[_HEADER.size :], height * width
    if kind == LOGITS:
        if len(payload) != _INPUT_SIZE.size + _LOGITS_BYTES:
            raise ValueError(
                f"a logits mask has {_INPUT_SIZE.size + _LOGITS_BYTES} bytes, got {len(payload)}"
            )
        input_size = _INPUT_SIZE.unpack_from(payload)
        low = np.frombuffer(payload, "<f4", offset=_INPUT_SIZE.size).reshape(LOW_RES_SIZE, LOW_RES_SIZE)
        return postprocess_to_masks(low.astype(np.float32), input_size, (height, width))
    if kind == BITS:
        if len(payload) != (size + 7) // 8:
            raise ValueError(f"bit-packed {height}x{width} mask has {len(payload)} bytes of bits")
        bits = np.unpackbits(np.frombuffer(payload, np.uint8), count=size)
        return bits.astype(np.bool_).reshape(height, width)
    if kind != RUNS:
        raise ValueError(f"unknown mask encoding {kind!r}")
    counts = decode_coco_counts_array(payload)
    if (counts.size and counts.min() < 0) or int(counts.sum()) != size:
        raise ValueError(f"run lengths do not cover a {height}x{width} mask")
    values = np.zeros(counts.size, dtype=np.bool_)
    values[1::2] = True
    return np.repeat(values, counts).reshape(height, width)


def decode_masks(encoded: list[bytes], shape: tuple[int, ...]) -> BoolArray:
    """Masks of :func:`encode_masks` back into a (*shape, H, W) bool array (all the same size)."""
    masks = [decode_mask(data) for data in encoded]
    sizes = {m.shape for m in masks}
    if len(masks) != int(np.prod(shape)) or len(sizes) > 1:
        raise ValueError(f"{len(masks)} masks of sizes {sorted(sizes)} do not make a {list(shape)} stack")
    (height, width) = sizes.pop() if sizes else (0, 0)
    return np.stack(masks).reshape(*shape, height, width) if masks else np.zeros((*shape, 0, 0), np.bool_)
