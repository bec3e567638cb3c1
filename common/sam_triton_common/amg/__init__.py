"""Automatic mask generation in numpy: ``segment_anything``'s and ``sam2``'s AMG without torch.

Shared by the server-side ``sam_automask`` model and the client SDK. ``generate`` runs the
whole ``SamAutomaticMaskGenerator`` algorithm against any encoder/decoder pair,
``generate_sam2`` ``SAM2AutomaticMaskGenerator``'s; the building
blocks (grids, crops, stability score, NMS, region clean-up) match ``segment_anything.utils.amg``
and ``torchvision.ops.batched_nms`` numerically.
"""

from .boxes import (
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    is_box_near_crop_edge,
    nms,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from .data import OUTPUT_MODES, MaskData, MaskRecord, OutputMode, records_from_mask_data
from .generator import (
    DecodeFn,
    EncodeFn,
    Sam2DecodeFn,
    generate,
    generate_mask_data,
    generate_sam2,
    generate_sam2_mask_data,
    postprocess_small_regions,
)
from .grids import build_all_layer_point_grids, build_point_grid, generate_crop_boxes
from .params import FAMILY_DEFAULTS, AmgParams, family_params
from .regions import Components, connected_components, fill_holes_and_sprinkles, remove_small_regions
from .scores import calculate_stability_score

__all__ = [
    "AmgParams",
    "Components",
    "DecodeFn",
    "EncodeFn",
    "FAMILY_DEFAULTS",
    "MaskData",
    "MaskRecord",
    "OUTPUT_MODES",
    "OutputMode",
    "Sam2DecodeFn",
    "batched_nms",
    "box_area",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "connected_components",
    "family_params",
    "fill_holes_and_sprinkles",
    "generate",
    "generate_crop_boxes",
    "generate_mask_data",
    "generate_sam2",
    "generate_sam2_mask_data",
    "is_box_near_crop_edge",
    "nms",
    "postprocess_small_regions",
    "records_from_mask_data",
    "remove_small_regions",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
