"""The ``sam_automask`` wire format: :class:`AmgParams` and :class:`MaskData` <-> protobuf.

Both ends import this module (the SDK encodes parameters and decodes results, the server's
Python model does the opposite), so the two directions cannot drift apart. Records travel as
image-frame uncompressed RLE plus the reference's raw columns (XYXY boxes, float32 scores,
float64 prompt points); the client turns them into records with ``records_from_mask_data``,
the same code path the in-process generator uses.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import InvalidInputError, ServerError
from ..proto import automask_pb2
from ..rle import RLE
from .data import MaskData
from .params import AmgParams

__all__ = [
    "decode_params",
    "decode_result",
    "encode_params",
    "encode_result",
    "params_from_proto",
    "params_to_proto",
]


def params_to_proto(params: AmgParams) -> automask_pb2.AutomaskParams:
    """Every field set explicitly: proto3 cannot tell an unset field from a zero."""
    grids = []
    if params.point_grids is not None:
        grids = [automask_pb2.PointGrid(xy=g.reshape(-1).tolist()) for g in params.layer_grids()]
    return automask_pb2.AutomaskParams(
        points_per_side=params.points_per_side or 0,
        points_per_batch=params.points_per_batch,
        pred_iou_thresh=params.pred_iou_thresh,
        stability_score_thresh=params.stability_score_thresh,
        stability_score_offset=params.stability_score_offset,
        box_nms_thresh=params.box_nms_thresh,
        crop_n_layers=params.crop_n_layers,
        crop_nms_thresh=params.crop_nms_thresh,
        crop_overlap_ratio=params.crop_overlap_ratio,
        crop_n_points_downscale_factor=params.crop_n_points_downscale_factor,
        point_grids=grids,
        min_mask_region_area=params.min_mask_region_area,
        mask_threshold=params.mask_threshold,
        use_m2m=params.use_m2m,
        multimask_output=params.multimask_output,
    )


def params_from_proto(msg: automask_pb2.AutomaskParams) -> AmgParams:
    """Validated parameters (:class:`InvalidInputError` says what is wrong)."""
    grids = None
    if msg.points_per_side <= 0:
        grids = []
        for i, grid in enumerate(msg.point_grids):
            if len(grid.xy) % 2:
                raise InvalidInputError(
                    f"point_grids[{i}] holds {len(grid.xy)} numbers; expected (x, y) pairs"
                )
            grids.append(np.asarray(grid.xy, dtype=np.float64).reshape(-1, 2))
        if not grids:
            raise InvalidInputError("points_per_side must be >= 1, or point_grids must be given")
    elif len(msg.point_grids):
        raise InvalidInputError("give points_per_side or point_grids, not both")
    return AmgParams(
        points_per_side=msg.points_per_side if grids is None else None,
        points_per_batch=msg.points_per_batch,
        pred_iou_thresh=msg.pred_iou_thresh,
        stability_score_thresh=msg.stability_score_thresh,
        stability_score_offset=msg.stability_score_offset,
        box_nms_thresh=msg.box_nms_thresh,
        crop_n_layers=msg.crop_n_layers,
        crop_nms_thresh=msg.crop_nms_thresh,
        crop_overlap_ratio=msg.crop_overlap_ratio,
        crop_n_points_downscale_factor=msg.crop_n_points_downscale_factor,
        point_grids=grids,
        min_mask_region_area=msg.min_mask_region_area,
        mask_threshold=msg.mask_threshold,
        use_m2m=msg.use_m2m,
        multimask_output=msg.multimask_output if msg.HasField("multimask_output") else True,
    )


def encode_params(params: AmgParams) -> bytes:
    raw: bytes = params_to_proto(params).SerializeToString()
    return raw


def decode_params(raw: bytes) -> AmgParams:
    try:
        msg = automask_pb2.AutomaskParams.FromString(raw)
    except DecodeError as exc:
        raise InvalidInputError(f"params is not a serialized AutomaskParams message: {exc}") from None
    return params_from_proto(msg)


def encode_result(
    data: MaskData,
    image_size: tuple[int, int],
    *,
    crops: int = 0,
    prompts: int = 0,
    encode_seconds: float = 0.0,
    total_seconds: float = 0.0,
) -> automask_pb2.AutomaskResult:
    boxes, crop_boxes, points = data.boxes.tolist(), data.crop_boxes.tolist(), data.points.tolist()
    ious, stabilities = data.iou_preds.tolist(), data.stability_score.tolist()
    records = [
        automask_pb2.MaskRecord(
            rle_counts=rle["counts"],
            area=int(sum(rle["counts"][1::2])),
            bbox=boxes[i],
            predicted_iou=ious[i],
            point_coords=points[i],
            stability_score=stabilities[i],
            crop_box=crop_boxes[i],
        )
        for i, rle in enumerate(data.rles)
    ]
    return automask_pb2.AutomaskResult(
        height=image_size[0],
        width=image_size[1],
        records=records,
        crops=crops,
        prompts=prompts,
        encode_seconds=encode_seconds,
        total_seconds=total_seconds,
    )


def decode_result(result: automask_pb2.AutomaskResult) -> MaskData:
    """The server's masks as :class:`MaskData`; a malformed answer is a :class:`ServerError`."""
    h, w = int(result.height), int(result.width)
    n = len(result.records)
    rles: list[RLE] = []
    for i, rec in enumerate(result.records):
        counts = list(rec.rle_counts)
        if sum(counts) != h * w or len(rec.bbox) != 4 or len(rec.crop_box) != 4 or len(rec.point_coords) != 2:
            raise ServerError(f"sam_automask returned a malformed record {i} for a {h}x{w} image")
        rles.append(RLE(size=[h, w], counts=counts))
    return MaskData(
        rles=rles,
        boxes=np.asarray([list(r.bbox) for r in result.records], dtype=np.int64).reshape(n, 4),
        iou_preds=np.asarray([r.predicted_iou for r in result.records], dtype=np.float32),
        points=np.asarray([list(r.point_coords) for r in result.records], dtype=np.float64).reshape(n, 2),
        stability_score=np.asarray([r.stability_score for r in result.records], dtype=np.float32),
        crop_boxes=np.asarray([list(r.crop_box) for r in result.records], dtype=np.int64).reshape(n, 4),
    )
