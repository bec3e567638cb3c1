from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AutomaskParams(_message.Message):
    __slots__ = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor", "point_grids", "min_mask_region_area", "mask_threshold", "use_m2m", "multimask_output")
    POINTS_PER_SIDE_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    PRED_IOU_THRESH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_THRESH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BOX_NMS_THRESH_FIELD_NUMBER: _ClassVar[int]
    CROP_N_LAYERS_FIELD_NUMBER: _ClassVar[int]
    CROP_NMS_THRESH_FIELD_NUMBER: _ClassVar[int]
    CROP_OVERLAP_RATIO_FIELD_NUMBER: _ClassVar[int]
    CROP_N_POINTS_DOWNSCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    POINT_GRIDS_FIELD_NUMBER: _ClassVar[int]
    MIN_MASK_REGION_AREA_FIELD_NUMBER: _ClassVar[int]
    MASK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    USE_M2M_FIELD_NUMBER: _ClassVar[int]
    MULTIMASK_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    points_per_side: int
    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    box_nms_thresh: float
    crop_n_layers: int
    crop_nms_thresh: float
    crop_overlap_ratio: float
    crop_n_points_downscale_factor: int
    point_grids: _containers.RepeatedCompositeFieldContainer[PointGrid]
    min_mask_region_area: int
    mask_threshold: float
    use_m2m: bool
    multimask_output: bool
    def __init__(self, points_per_side: _Optional[int] = ..., points_per_batch: _Optional[int] = ..., pred_iou_thresh: _Optional[float] = ..., stability_score_thresh: _Optional[float] = ..., stability_score_offset: _Optional[float] = ..., box_nms_thresh: _Optional[float] = ..., crop_n_layers: _Optional[int] = ..., crop_nms_thresh: _Optional[float] = ..., crop_overlap_ratio: _Optional[float] = ..., crop_n_points_downscale_factor: _Optional[int] = ..., point_grids: _Optional[_Iterable[_Union[PointGrid, _Mapping]]] = ..., min_mask_region_area: _Optional[int] = ..., mask_threshold: _Optional[float] = ..., use_m2m: _Optional[bool] = ..., multimask_output: _Optional[bool] = ...) -> None: ...

class PointGrid(_message.Message):
    __slots__ = ("xy",)
    XY_FIELD_NUMBER: _ClassVar[int]
    xy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, xy: _Optional[_Iterable[float]] = ...) -> None: ...

class MaskRecord(_message.Message):
    __slots__ = ("rle_counts", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box", "area")
    RLE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_IOU_FIELD_NUMBER: _ClassVar[int]
    POINT_COORDS_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    CROP_BOX_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    rle_counts: _containers.RepeatedScalarFieldContainer[int]
    bbox: _containers.RepeatedScalarFieldContainer[int]
    predicted_iou: float
    point_coords: _containers.RepeatedScalarFieldContainer[float]
    stability_score: float
    crop_box: _containers.RepeatedScalarFieldContainer[int]
    area: int
    def __init__(self, rle_counts: _Optional[_Iterable[int]] = ..., bbox: _Optional[_Iterable[int]] = ..., predicted_iou: _Optional[float] = ..., point_coords: _Optional[_Iterable[float]] = ..., stability_score: _Optional[float] = ..., crop_box: _Optional[_Iterable[int]] = ..., area: _Optional[int] = ...) -> None: ...

class AutomaskResult(_message.Message):
    __slots__ = ("height", "width", "records", "crops", "prompts", "encode_seconds", "total_seconds")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    records: _containers.RepeatedCompositeFieldContainer[MaskRecord]
    crops: int
    prompts: int
    encode_seconds: float
    total_seconds: float
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., records: _Optional[_Iterable[_Union[MaskRecord, _Mapping]]] = ..., crops: _Optional[int] = ..., prompts: _Optional[int] = ..., encode_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...
