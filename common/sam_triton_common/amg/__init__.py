"""Automatic mask generation in numpy: ``segment_anything``'s AMG without torch.

Shared by the server-side ``sam_automask`` model and the client SDK. ``generate`` runs the
whole ``SamAutomaticMaskGenerator`` algorithm against any encoder/decoder pair; the building
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
from .generator import DecodeFn, EncodeFn, generate, generate_mask_data, postprocess_small_regions
from .grids import build_all_layer_point_grids, build_point_grid, generate_crop_boxes
from .params import AmgParams
from .regions import Components, connected_components, remove_small_regions
from .scores import calculate_stability_score

__all__ = [
    "AmgParams",
    "Components",
    "DecodeFn",
    "EncodeFn",
    "MaskData",
    "MaskRecord",
    "OUTPUT_MODES",
    "OutputMode",
    "batched_nms",
    "box_area",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "connected_components",
    "generate",
    "generate_crop_boxes",
    "generate_mask_data",
    "is_box_near_crop_edge",
    "nms",
    "postprocess_small_regions",
    "records_from_mask_data",
    "remove_small_regions",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
