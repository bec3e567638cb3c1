"""Automatic mask generation: ``SamAutomaticMaskGenerator`` and ``SAM2AutomaticMaskGenerator`` as
one backend-agnostic algorithm.

The model is reached only through two callables, so the same code runs in-process against
onnxruntime or torch (tests, benchmarks) and inside the Triton Python-backend model that
calls the encoder and the decoder:

* ``encode_fn(crop)`` gets an (h, w, 3) uint8 RGB crop and returns an opaque handle to its
  embedding (it does the resize/pad itself). It is called for *every* crop before the first
  ``decode_fn`` call, so it may return a future (e.g. an async BLS request) that ``decode_fn``
  resolves - all crops then encode in one dynamic batch.
* ``decode_fn(handle, point_coords, point_labels)`` gets (B, 1, 2) float64 prompts already in
  the 1024 frame (``ResizeLongestSide.apply_coords`` of the crop) and (B, 1) float32 labels
  (all 1), exactly what ``SamPredictor.predict_torch`` receives - no padding point; an ONNX
  decoder adapter appends SAM's (0, 0)/-1 padding point itself. It returns multimask
  low-res logits (B, K, 256, 256) and IoU predictions (B, K). SAM 2's (:data:`Sam2DecodeFn`)
  also takes ``mask_input`` ((B, 1, 256, 256) or None) and ``multimask_output``, what
  ``SAM2ImagePredictor._predict`` gets; its coordinates are ``SAM2Transforms.transform_coords``'
  (x * 1024 / w, y * 1024 / h in float32).

Step by step it follows ``generate``/``_generate_masks``/``_process_crop``/``_process_batch``/
``postprocess_small_regions`` with the same filters in the same order and the same numerics.
The one reordering: the predicted-IoU filter runs before the masks are upscaled (it does not
look at the masks, so the result is identical) - the reference upscales every candidate
first, which is most of its CPU time. Upscaled logits are processed in bounded blocks and
kept masks go straight to image-frame RLE, so memory stays flat on large images.

What SAM 2's generator does differently lives in :class:`_Sam2Rules`, one method per step:
float32 prompt points, the optional ``use_m2m`` refinement (every candidate decoded again,
single-mask, with its own low-res logits clamped to [-32, 32] as ``mask_input``; its IoU then
replaces the first one), ``min_mask_region_area`` applied to each prediction's *low-res*
logits as ``max_hole_area``/``max_sprinkle_area`` (<= area, 8-connected) before the upscale,
the 256 -> crop upscale in one bilinear step, and no clean-up pass at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInputError
from ..rle import RLE, batched_mask_to_box, masks_to_rle, rle_to_mask
from ..transforms import (
    IMAGE_SIZE,
    LOW_RES_SIZE,
    SQUARE_INPUT,
    apply_coords,
    postprocess_masks,
    preprocess_shape,
)
from .boxes import batched_nms, box_area, is_box_near_crop_edge, uncrop_boxes_xyxy, uncrop_points
from .data import MaskData, MaskRecord, records_from_mask_data
from .grids import generate_crop_boxes
from .params import AmgParams
from .regions import fill_holes_and_sprinkles, remove_small_regions
from .scores import calculate_stability_score

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]

Handle = TypeVar("Handle")
Handle_contra = TypeVar("Handle_contra", contravariant=True)
EncodeFn = Callable[[UInt8Array], Handle]
DecodeFn = Callable[[Handle, Float64Array, Float32Array], tuple[npt.ArrayLike, npt.ArrayLike]]


class Sam2DecodeFn(Protocol[Handle_contra]):
    """SAM 2's ``decode_fn`` (see the module doc)."""

    def __call__(
        self,
        handle: Handle_contra,
        point_coords: Float64Array,
        point_labels: Float32Array,
        mask_input: Float32Array | None,
        multimask_output: bool,
        /,
    ) -> tuple[npt.ArrayLike, npt.ArrayLike]: ...


__all__ = [
    "Sam2DecodeFn",
    "generate",
    "generate_mask_data",
    "generate_sam2",
    "generate_sam2_mask_data",
    "postprocess_small_regions",
]

M2M_LOGIT_CLAMP = 32.0
"""``SAM2ImagePredictor._predict`` clamps the low-res logits it returns (the m2m mask input)."""

# Upscaled float32 logits held at once (elements): 2**24 = 64 MiB, whatever the image size.
_UPSCALE_BLOCK_ELEMENTS = 1 << 24


def _check_image(image: npt.ArrayLike) -> UInt8Array:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"image is empty: shape {arr.shape}")
    return arr


def _check_crops(crop_boxes: Sequence[Sequence[int]], image_shape: tuple[int, int]) -> None:
    for x0, y0, x1, y1 in crop_boxes:
        if x1 <= x0 or y1 <= y0:
            raise InvalidInputError(
                f"image of {image_shape[0]}x{image_shape[1]} pixels is too small for the requested "
                f"crop layers (crop box {[x0, y0, x1, y1]} is empty)"
            )


def _checked_decoder_outputs(
    low_raw: npt.ArrayLike, iou_raw: npt.ArrayLike, coords: Float64Array
) -> tuple[Float32Array, Float32Array]:
    low = np.asarray(low_raw, dtype=np.float32)
    iou = np.asarray(iou_raw, dtype=np.float32)
    n = coords.shape[0]
    if low.ndim != 4 or low.shape[0] != n or low.shape[2:] != (LOW_RES_SIZE, LOW_RES_SIZE):
        raise ValueError(f"decode_fn returned logits of shape {low.shape}, expected ({n}, K, 256, 256)")
    if iou.shape != low.shape[:2]:
        raise ValueError(f"decode_fn returned IoU predictions of shape {iou.shape}, expected {low.shape[:2]}")
    return low, iou


class _Sam1Rules(Generic[Handle]):
    """``SamAutomaticMaskGenerator``'s family steps."""

    point_dtype: type[np.floating[Any]] = np.float64  # its prompt points stay float64 numpy

    def __init__(self, decode_fn: DecodeFn[Handle], params: AmgParams) -> None:
        self._decode_fn = decode_fn
        self._params = params

    def predict(
        self, handle: Handle, points: Float64Array, crop_hw: tuple[int, int]
    ) -> tuple[Float32Array, Float32Array, Float64Array]:
        """(N, 256, 256) logits, (N,) IoUs and (N, 2) prompt points of every candidate,
        prompt-major (like ``flatten(0, 1)``)."""
        coords = apply_coords(points, crop_hw)
        labels = np.ones((coords.shape[0], 1), dtype=np.float32)
        low, iou = _checked_decoder_outputs(*self._decode_fn(handle, coords[:, None, :], labels), coords)
        k = low.shape[1]
        return low.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), iou.reshape(-1), np.repeat(points, k, axis=0)

    def upscale(self, logits: Float32Array, crop_hw: tuple[int, int]) -> Float32Array:
        return postprocess_masks(logits, preprocess_shape(*crop_hw), crop_hw)

    def finish(self, data: MaskData) -> MaskData:
        params = self._params
        if params.min_mask_region_area > 0:
            data = postprocess_small_regions(
                data, params.min_mask_region_area, max(params.box_nms_thresh, params.crop_nms_thresh)
            )
        return data


class _Sam2Rules(Generic[Handle]):
    """``SAM2AutomaticMaskGenerator``'s family steps (with ``SAM2ImagePredictor``'s)."""

    point_dtype: type[np.floating[Any]] = np.float32  # torch.as_tensor(points, dtype=torch.float32)

    def __init__(self, decode_fn: Sam2DecodeFn[Handle], params: AmgParams) -> None:
        self._decode_fn = decode_fn
        self._params = params

    def _decode(
        self, handle: Handle, coords: Float64Array, mask_input: Float32Array | None, multimask: bool
    ) -> tuple[Float32Array, Float32Array]:
        labels = np.ones((coords.shape[0], 1), dtype=np.float32)
        raw = self._decode_fn(handle, coords[:, None, :], labels, mask_input, multimask)
        return _checked_decoder_outputs(*raw, coords)

    def predict(
        self, handle: Handle, points: Float64Array, crop_hw: tuple[int, int]
    ) -> tuple[Float32Array, Float32Array, Float64Array]:
        points32 = points.astype(np.float32)
        h, w = crop_hw
        # transform_coords(normalize=True): x / w, y / h, then * 1024, all in float32.
        scale = np.array([w, h], dtype=np.float32)
        coords = ((points32 / scale) * np.float32(IMAGE_SIZE)).astype(np.float64)
        low, iou = self._decode(handle, coords, None, self._params.multimask_output)
        k = low.shape[1]
        logits, ious = low.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), iou.reshape(-1)
        coords = np.repeat(coords, k, axis=0)
        if self._params.use_m2m:
            logits, ious = self._refine(handle, coords, logits)
        return logits, ious, np.repeat(points32, k, axis=0).astype(np.float64)

    def _refine(
        self, handle: Handle, coords: Float64Array, logits: Float32Array
    ) -> tuple[Float32Array, Float32Array]:
        """``refine_with_m2m``: every candidate again, single-mask, its clamped logits as mask
        input, in batches of ``points_per_batch``."""
        step = self._params.points_per_batch
        masks, ious = [], []
        for first in range(0, coords.shape[0], step):
            mask_input = np.clip(logits[first : first + step], -M2M_LOGIT_CLAMP, M2M_LOGIT_CLAMP)[:, None]
            low, iou = self._decode(handle, coords[first : first + step], mask_input, False)
            if low.shape[1] != 1:
                raise ValueError(f"decode_fn returned {low.shape[1]} masks per prompt without multimask")
            masks.append(low[:, 0])
            ious.append(iou[:, 0])
        return np.concatenate(masks), np.concatenate(ious)

    def upscale(self, logits: Float32Array, crop_hw: tuple[int, int]) -> Float32Array:
        area = self._params.min_mask_region_area
        if area > 0:  # SAM2ImagePredictor(max_hole_area=area, max_sprinkle_area=area), threshold 0.0
            logits = fill_holes_and_sprinkles(logits, area, area)
        return postprocess_masks(logits, SQUARE_INPUT, crop_hw)

    def finish(self, data: MaskData) -> MaskData:
        return data  # SAM2AutomaticMaskGenerator never calls its postprocess_small_regions


_Rules = _Sam1Rules[Handle] | _Sam2Rules[Handle]


def _process_batch(
    logits: Float32Array,
    ious: Float32Array,
    prompt_points: Float64Array,
    params: AmgParams,
    rules: _Rules[Handle],
    crop_box: Sequence[int],
    orig_size: tuple[int, int],
) -> MaskData:
    """Filter one decoder batch's candidates and encode the surviving masks (``_process_batch``)."""
    # The IoU filter ignores the masks: apply it before paying for the upscale.
    candidates = np.arange(ious.size)
    if params.pred_iou_thresh > 0.0:
        candidates = np.flatnonzero(ious > np.float32(params.pred_iou_thresh))

    x0, y0, x1, y1 = (int(v) for v in crop_box)
    crop_size = (y1 - y0, x1 - x0)
    orig_h, orig_w = orig_size
    block = max(1, _UPSCALE_BLOCK_ELEMENTS // (crop_size[0] * crop_size[1]))
    parts: list[MaskData] = []
    for first in range(0, candidates.size, block):
        idx = candidates[first : first + block]
        upscaled = rules.upscale(logits[idx], crop_size)
        stability = calculate_stability_score(upscaled, params.mask_threshold, params.stability_score_offset)
        if params.stability_score_thresh > 0.0:
            stable = stability >= np.float32(params.stability_score_thresh)
            idx, upscaled, stability = idx[stable], upscaled[stable], stability[stable]
        masks = upscaled > np.float32(params.mask_threshold)
        del upscaled
        boxes = batched_mask_to_box(masks)
        # Masks cut by a crop border are left to the crop (or full image) that sees them whole.
        inside = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        idx, masks, boxes, stability = idx[inside], masks[inside], boxes[inside], stability[inside]
        parts.append(
            MaskData(
                rles=masks_to_rle(masks, offset=(x0, y0), image_size=orig_size),
                boxes=boxes,  # still in the crop frame: the crop-level NMS uses them so
                iou_preds=ious[idx],
                points=prompt_points[idx],
                stability_score=stability.astype(np.float32),
                crop_boxes=np.zeros((idx.size, 4), dtype=np.int64),  # set per crop
            )
        )
    return MaskData.concat(parts)


def _process_crop(
    handle: Handle,
    rules: _Rules[Handle],
    grid: Float64Array,
    params: AmgParams,
    crop_box: Sequence[int],
    orig_size: tuple[int, int],
) -> MaskData:
    """All prompts of one crop, NMS within the crop, back to the image frame (``_process_crop``)."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    crop_hw = (y1 - y0, x1 - x0)
    points = grid * np.array([[crop_hw[1], crop_hw[0]]])
    batches: list[MaskData] = []
    for first in range(0, points.shape[0], params.points_per_batch):
        logits, ious, prompt_points = rules.predict(
            handle, points[first : first + params.points_per_batch], crop_hw
        )
        batches.append(_process_batch(logits, ious, prompt_points, params, rules, crop_box, orig_size))
    data = MaskData.concat(batches)
    keep = batched_nms(
        data.boxes.astype(np.float32), data.iou_preds, np.zeros(len(data)), params.box_nms_thresh
    )
    data = data.take(keep)
    data.boxes = uncrop_boxes_xyxy(data.boxes, crop_box).astype(np.int64)
    # In the reference's dtype: SAM 2's float32 points + the offset round to float32.
    data.points = uncrop_points(data.points.astype(rules.point_dtype), crop_box).astype(np.float64)
    data.crop_boxes = np.tile(np.asarray([x0, y0, x1, y1], dtype=np.int64), (len(data), 1))
    return data


def generate_mask_data(
    image: npt.ArrayLike,
    params: AmgParams,
    encode_fn: EncodeFn[Handle],
    decode_fn: DecodeFn[Handle],
) -> MaskData:
    """Every mask ``SamAutomaticMaskGenerator`` keeps, before output encoding (``_generate_masks``
    + clean-up)."""
    params.check_family("sam1")
    return _generate_mask_data(image, params, encode_fn, _Sam1Rules(decode_fn, params))


def generate_sam2_mask_data(
    image: npt.ArrayLike,
    params: AmgParams,
    encode_fn: EncodeFn[Handle],
    decode_fn: Sam2DecodeFn[Handle],
) -> MaskData:
    """Every mask ``SAM2AutomaticMaskGenerator`` keeps, before output encoding (``_generate_masks``)."""
    return _generate_mask_data(image, params, encode_fn, _Sam2Rules(decode_fn, params))


def _generate_mask_data(
    image: npt.ArrayLike, params: AmgParams, encode_fn: EncodeFn[Handle], rules: _Rules[Handle]
) -> MaskData:
    img = _check_image(image)
    orig_size = (int(img.shape[0]), int(img.shape[1]))
    crop_boxes, layer_idxs = generate_crop_boxes(orig_size, params.crop_n_layers, params.crop_overlap_ratio)
    _check_crops(crop_boxes, orig_size)
    grids = params.layer_grids()

    # Encode every crop first (see the module doc: lets encode_fn batch/pipeline them).
    handles = [encode_fn(np.ascontiguousarray(img[y0:y1, x0:x1, :])) for x0, y0, x1, y1 in crop_boxes]
    data = MaskData.concat(
        [
            _process_crop(handle, rules, grids[layer], params, box, orig_size)
            for handle, box, layer in zip(handles, crop_boxes, layer_idxs, strict=True)
        ]
    )

    if len(crop_boxes) > 1 and len(data) > 0:
        # Duplicates across crops: prefer the mask from the smaller crop (torch: 1 / int64 area
        # is a float32 division).
        scores = np.float32(1.0) / box_area(data.crop_boxes).astype(np.float32)
        keep = batched_nms(data.boxes.astype(np.float32), scores, np.zeros(len(data)), params.crop_nms_thresh)
        data = data.take(keep)
    return rules.finish(data)


def postprocess_small_regions(data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
    """Fill small holes, drop small islands, then NMS again preferring untouched masks.

    Only masks that survive the NMS and were changed get a new RLE and box, like the
    reference (which keeps the old box for unchanged masks - identical anyway).
    """
    if len(data) == 0:
        return data
    # Edited masks are re-encoded at once rather than held as full-size arrays until the NMS.
    edited: dict[int, RLE] = {}
    boxes = np.empty((len(data), 4), dtype=np.int64)
    scores = np.empty(len(data), dtype=np.float32)
    for i, rle in enumerate(data.rles):
        mask, filled = remove_small_regions(rle_to_mask(rle), min_area, "holes")
        mask, trimmed = remove_small_regions(mask, min_area, "islands")
        boxes[i] = batched_mask_to_box(mask)
        # NMS score 1 for untouched masks, 0 for edited ones.
        scores[i] = 0.0 if (filled or trimmed) else 1.0
        if filled or trimmed:
            edited[i] = masks_to_rle(mask[None])[0]
    keep = batched_nms(boxes.astype(np.float32), scores, np.zeros(len(data)), nms_thresh)
    rles = list(data.rles)
    new_boxes = data.boxes.copy()
    for i in keep.tolist():
        if i in edited:
            rles[i] = edited[i]
            new_boxes[i] = boxes[i]
    updated = MaskData(rles, new_boxes, data.iou_preds, data.points, data.stability_score, data.crop_boxes)
    return updated.take(keep)


def generate(
    image: npt.ArrayLike,
    params: AmgParams,
    encode_fn: EncodeFn[Handle],
    decode_fn: DecodeFn[Handle],
) -> list[MaskRecord]:
    """``SamAutomaticMaskGenerator.generate`` on any backend; ``[]`` when no mask survives."""
    return records_from_mask_data(generate_mask_data(image, params, encode_fn, decode_fn), params.output_mode)


def generate_sam2(
    image: npt.ArrayLike,
    params: AmgParams,
    encode_fn: EncodeFn[Handle],
    decode_fn: Sam2DecodeFn[Handle],
) -> list[MaskRecord]:
    """``SAM2AutomaticMaskGenerator.generate`` on any backend; ``[]`` when no mask survives."""
    return records_from_mask_data(
        generate_sam2_mask_data(image, params, encode_fn, decode_fn), params.output_mode
    )
