"""ResizeLongestSide and mask post-processing, bit-compatible with ``segment_anything``.

This module is the single source of truth for every geometric transform in sam-triton: the
SDK, the server-side Python models (sessions, automatic masks) and the benchmarks import it,
so the encoder input, the prompt coordinates and the output masks always agree with the
reference ``SamPredictor``. It needs numpy and Pillow only (no torch).

Reference behaviour reproduced here:

* ``ResizeLongestSide.get_preprocess_shape`` - ``int(x + 0.5)`` rounding of ``scale * side``.
* ``ResizeLongestSide.apply_image`` - ``torchvision.transforms.functional.resize`` on a PIL
  image, i.e. Pillow's bilinear (antialiased) resize.
* ``apply_coords`` / ``apply_boxes`` - float64 scaling, later cast to float32 by the caller.
* ``Sam.postprocess_masks`` - ``F.interpolate(bilinear, align_corners=False)`` to 1024x1024,
  crop to the input size, ``F.interpolate`` to the original size. Both stages are linear and
  separable, so each axis collapses into one ``(out, 256)`` matrix, never materialising the
  1024x1024 intermediate. Bilinear is 2 taps per stage, so each row of that matrix has at most
  4 non-zeros, all next to each other: the matrix is a narrow band. It is applied in blocks of
  output rows, each a small dense matmul over only the inputs that block reads (a handful instead
  of 256), which is 4-8x faster than the dense product and keeps each block in cache, so binary
  masks are thresholded block by block without a full-size float copy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image

from .contract import EMBEDDING_SHAPE as EMBEDDING_SHAPE
from .contract import IMAGE_SIZE as IMAGE_SIZE
from .contract import LOW_RES_SIZE as LOW_RES_SIZE

MASK_THRESHOLD = 0.0
"""``Sam.mask_threshold``: logits above it are foreground."""

SQUARE_INPUT = (0, 0)
"""The ``input_size`` of a family without a 1024 frame inside the original (SAM 2): its
256x256 logits are resized straight to the original size, as ``SAM2Transforms.postprocess_masks``
does, instead of SAM 1's upscale to 1024, crop and resize."""

FloatArray = npt.NDArray[np.float32]


def preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after scaling so the longest side is ``long_side`` (``get_preprocess_shape``)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = long_side * 1.0 / max(height, width)
    # int(x + 0.5), not round(): Python's round() is banker's rounding and would disagree
    # with the reference on exact .5 cases.
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: npt.NDArray[np.uint8], long_side: int = IMAGE_SIZE) -> npt.NDArray[np.uint8]:
    """Resize an HWC uint8 RGB image so its longest side is ``long_side``.

    Same pixels as ``ResizeLongestSide.apply_image``: torchvision resizes PIL images with
    Pillow's own bilinear filter (which antialiases when shrinking), so we call Pillow directly.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    return np.asarray(pil.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.uint8)


def pad_image(image: npt.NDArray[np.uint8], size: int = IMAGE_SIZE) -> npt.NDArray[np.uint8]:
    """Zero-pad a resized HWC image bottom/right to ``size`` x ``size``.

    Zeros here are only placeholders: the encoder graph normalises and then zeroes the padded
    region itself (SAM pads after normalising), using ``input_size`` to know where it is.
    """
    h, w = image.shape[:2]
    if h > size or w > size:
        raise ValueError(f"image {h}x{w} is larger than the {size}x{size} encoder input")
    out = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
    out[:h, :w] = image
    return out


def prepare_image(image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """Resize + pad an HxWx3 RGB image for ``sam_encoder``; returns (padded, input_size)."""
    resized = resize_image(image)
    return pad_image(resized), (int(resized.shape[0]), int(resized.shape[1]))


def apply_coords(coords: npt.ArrayLike, original_size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Scale (..., 2) (x, y) pixel coordinates into the 1024 frame (float64 like the reference)."""
    return _scale_coords(coords, original_size, IMAGE_SIZE)


def _scale_coords(
    coords: npt.ArrayLike, original_size: tuple[int, int], long_side: int
) -> npt.NDArray[np.float64]:
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out


def apply_boxes(boxes: npt.ArrayLike, original_size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Scale (B, 4) XYXY boxes into the 1024 frame (float64 like the reference)."""
    arr = np.asarray(boxes, dtype=np.float64)
    return apply_coords(arr.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def _interp_matrix(in_size: int, out_size: int) -> npt.NDArray[np.float64]:
    """(out, in) matrix of ``F.interpolate(mode="bilinear", align_corners=False)`` on one axis.

    Mirrors ATen's CPU kernel: scale = in/out, src = (dst + 0.5) * scale - 0.5 clamped at 0,
    i0 = floor(src), i1 = min(i0 + 1, in - 1), weights (1 - l, l). The arithmetic is done in
    float32 like ATen's ``opmath`` for float tensors so the weights match to the last bit.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum((dst + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1: npt.NDArray[np.float32] = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    lam0 = np.float32(1.0) - lam1
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    # i0 == i1 at the last pixel: add, do not overwrite, so the row still sums to one.
    np.add.at(mat, (rows, i0), lam0.astype(np.float64))
    np.add.at(mat, (rows, i1), lam1.astype(np.float64))
    return mat


@lru_cache(maxsize=64)
def _axis_matrix(input_len: int, original_len: int) -> FloatArray:
    """Composite (original_len, 256) matrix: 256 -> 1024 upscale, crop to input_len, -> original.

    Cached: an interactive session calls this with the same sizes on every click.
    ``input_len`` 0 (:data:`SQUARE_INPUT`): 256 -> original in one step.
    """
    if input_len == 0:
        direct = _interp_matrix(LOW_RES_SIZE, original_len).astype(np.float32)
        direct.setflags(write=False)
        return direct
    up = _interp_matrix(LOW_RES_SIZE, IMAGE_SIZE)[:input_len]  # (input_len, 256)
    down = _interp_matrix(input_len, original_len)  # (original_len, input_len)
    combined = (down @ up).astype(np.float32)
    combined.setflags(write=False)  # shared through the cache
    return combined


Band = tuple[int, int, int, int, FloatArray]
"""One block of a banded axis matrix: output rows [o0, o1) read inputs [i0, i1) with ``weights``."""

_ROW_BLOCK = 16
"""At most this many output rows per block of the row (height) stage."""

_COL_BLOCK = 64
"""At most this many output columns per block of the column (width) stage (256 rows each)."""

_GEMM_WORK_LIMIT = 1 << 18
"""Multiply-adds per block product. OpenBLAS (numpy's BLAS) runs a GEMM of at most 4 * 65536
multiply-adds on the calling thread; above that it wakes its worker threads, which then
spin-wait for a while after returning. Those spinning threads take the cores a co-located
Triton server needs: on 2 cores a click on a 1024x1024 image went from 50 ms to 115 ms because
of them, for no gain here (the blocks are tiny). Blocks stay under the limit."""


@lru_cache(maxsize=64)
def _axis_bands(input_len: int, original_len: int, max_block: int, other_len: int) -> tuple[Band, ...]:
    """:func:`_axis_matrix` cut into blocks of output rows, each with the input range it reads.

    Block ``(o0, o1, i0, i1, w)`` computes ``out[o0:o1] = w @ x[i0:i1]`` exactly as the dense
    product would (the columns left out are zeros). ``x`` has ``other_len`` entries along its
    other axis; blocks hold at most ``max_block`` rows and stay within ``_GEMM_WORK_LIMIT``
    multiply-adds (a single row may exceed it: it cannot be cut further).
    """
    matrix = _axis_matrix(input_len, original_len)
    nonzero = matrix != 0
    # The band is monotone: each row's first and last non-zero input never move backwards.
    first = np.argmax(nonzero, axis=1)
    last = matrix.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    bands: list[Band] = []
    o0 = 0
    while o0 < original_len:
        o1 = o0 + 1
        while (
            o1 < original_len
            and o1 - o0 < max_block
            and (o1 + 1 - o0) * (int(last[o1]) + 1 - int(first[o0])) * other_len <= _GEMM_WORK_LIMIT
        ):
            o1 += 1
        i0, i1 = int(first[o0]), int(last[o1 - 1]) + 1
        weights = np.ascontiguousarray(matrix[o0:o1, i0:i1])
        weights.setflags(write=False)
        bands.append((o0, o1, i0, i1, weights))
        o0 = o1
    return tuple(bands)


def _check_postprocess_args(
    low_res_masks: npt.ArrayLike, input_size: tuple[int, int], original_size: tuple[int, int]
) -> tuple[FloatArray, tuple[int, int], tuple[int, int]]:
    low = np.asarray(low_res_masks, dtype=np.float32)
    if low.ndim < 2 or low.shape[-2:] != (LOW_RES_SIZE, LOW_RES_SIZE):
        raise ValueError(f"expected (..., {LOW_RES_SIZE}, {LOW_RES_SIZE}) logits, got shape {low.shape}")
    in_h, in_w = (int(v) for v in input_size)
    out_h, out_w = (int(v) for v in original_size)
    if (in_h, in_w) != SQUARE_INPUT and not (0 < in_h <= IMAGE_SIZE and 0 < in_w <= IMAGE_SIZE):
        raise ValueError(f"input_size {input_size} must lie within {IMAGE_SIZE}x{IMAGE_SIZE}")
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"original_size must be positive, got {original_size}")
    return low, (in_h, in_w), (out_h, out_w)


def _upscale_columns(low: FloatArray, in_w: int, out_w: int) -> FloatArray:
    """(B, 256, 256) -> (B, 256, out_w): the width stage, on the small side of the work."""
    cols = np.empty((low.shape[0], LOW_RES_SIZE, out_w), dtype=np.float32)
    for o0, o1, i0, i1, weights in _axis_bands(in_w, out_w, _COL_BLOCK, LOW_RES_SIZE):
        np.matmul(low[:, :, i0:i1], weights.T, out=cols[:, :, o0:o1])
    return cols


def postprocess_masks(
    low_res_masks: npt.ArrayLike,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> FloatArray:
    """Upscale (..., 256, 256) logits to (..., H, W) at ``original_size`` like ``Sam.postprocess_masks``."""
    low, (in_h, in_w), (out_h, out_w) = _check_postprocess_args(low_res_masks, input_size, original_size)
    lead = low.shape[:-2]
    cols = _upscale_columns(low.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), in_w, out_w)
    out = np.empty((cols.shape[0], out_h, out_w), dtype=np.float32)
    for o0, o1, i0, i1, weights in _axis_bands(in_h, out_h, _ROW_BLOCK, out_w):
        np.matmul(weights, cols[:, i0:i1], out=out[:, o0:o1])
    return out.reshape(*lead, out_h, out_w)


def postprocess_to_masks(
    low_res_masks: npt.ArrayLike,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> npt.NDArray[np.bool_]:
    """``postprocess_masks(...) > threshold`` without the full-size float logits.

    Each block of rows is upscaled into a small scratch buffer and thresholded from there, so
    the only full-size array is the boolean result (a quarter of the float one).
    """
    low, (in_h, in_w), (out_h, out_w) = _check_postprocess_args(low_res_masks, input_size, original_size)
    lead = low.shape[:-2]
    cols = _upscale_columns(low.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), in_w, out_w)
    masks = np.empty((cols.shape[0], out_h, out_w), dtype=np.bool_)
    scratch = np.empty((cols.shape[0], _ROW_BLOCK, out_w), dtype=np.float32)
    limit = np.float32(threshold)
    for o0, o1, i0, i1, weights in _axis_bands(in_h, out_h, _ROW_BLOCK, out_w):
        block = scratch[:, : o1 - o0]
        np.matmul(weights, cols[:, i0:i1], out=block)
        np.greater(block, limit, out=masks[:, o0:o1])
    return masks.reshape(*lead, out_h, out_w)


def masks_from_logits(logits: FloatArray, threshold: float = MASK_THRESHOLD) -> npt.NDArray[np.bool_]:
    """Binary masks: ``logits > Sam.mask_threshold``."""
    return np.greater(logits, np.float32(threshold))


class ResizeLongestSide:
    """numpy-only stand-in for ``segment_anything.utils.transforms.ResizeLongestSide``.

    ``RemoteSamPredictor.transform`` is one, so code that calls ``predictor.transform.apply_coords``
    keeps working without torch.
    """

    def __init__(self, target_length: int = IMAGE_SIZE) -> None:
        self.target_length = target_length

    def apply_image(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return resize_image(image, self.target_length)

    def apply_coords(self, coords: npt.ArrayLike, original_size: tuple[int, ...]) -> npt.NDArray[np.float64]:
        return _scale_coords(coords, (int(original_size[0]), int(original_size[1])), self.target_length)

    def apply_boxes(self, boxes: npt.ArrayLike, original_size: tuple[int, ...]) -> npt.NDArray[np.float64]:
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
        return self.apply_coords(arr, original_size).reshape(-1, 4)

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        return preprocess_shape(oldh, oldw, long_side_length)
