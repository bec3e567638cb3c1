"""Typed containers for automatic-mask candidates and the records the generator returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt

from ..rle import RLE, CocoRLE, area_from_rle, rle_to_coco, rle_to_mask
from .boxes import box_xyxy_to_xywh

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
OUTPUT_MODES: tuple[OutputMode, ...] = ("binary_mask", "uncompressed_rle", "coco_rle")

__all__ = ["MaskData", "MaskRecord", "OutputMode", "OUTPUT_MODES", "records_from_mask_data"]


class MaskRecord(TypedDict):
    """One automatic mask, with the keys and meanings of ``SamAutomaticMaskGenerator.generate``."""

    segmentation: BoolArray | RLE | CocoRLE
    area: int
    bbox: list[int]  # XYWH, from the inclusive XYXY box
    predicted_iou: float
    point_coords: list[list[float]]  # the prompt, in image pixels
    stability_score: float
    crop_box: list[int]  # XYWH


@dataclass
class MaskData:
    """Column-wise candidate masks (the reference's ``MaskData``, with fixed, typed fields).

    Masks are kept as uncompressed RLEs in the image frame: full-size boolean masks for
    hundreds of candidates would not fit in memory on large images.
    """

    rles: list[RLE]
    boxes: Int64Array  # (N, 4) XYXY, inclusive max, image frame
    iou_preds: Float32Array  # (N,)
    points: Float64Array  # (N, 2) XY prompt, image frame
    stability_score: Float32Array  # (N,)
    crop_boxes: Int64Array  # (N, 4) XYXY crop each mask came from

    def __post_init__(self) -> None:
        n = len(self.rles)
        shapes = {
            "boxes": (self.boxes.shape, (n, 4)),
            "iou_preds": (self.iou_preds.shape, (n,)),
            "points": (self.points.shape, (n, 2)),
            "stability_score": (self.stability_score.shape, (n,)),
            "crop_boxes": (self.crop_boxes.shape, (n, 4)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"MaskData.{name} has shape {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.rles)

    @classmethod
    def empty(cls) -> MaskData:
        return cls(
            rles=[],
            boxes=np.zeros((0, 4), dtype=np.int64),
            iou_preds=np.zeros(0, dtype=np.float32),
            points=np.zeros((0, 2), dtype=np.float64),
            stability_score=np.zeros(0, dtype=np.float32),
            crop_boxes=np.zeros((0, 4), dtype=np.int64),
        )

    def take(self, index: npt.ArrayLike) -> MaskData:
        """Rows selected by an integer index array (in that order) or a boolean mask."""
        idx = np.asarray(index)
        positions = np.flatnonzero(idx) if idx.dtype == np.bool_ else idx.astype(np.int64).reshape(-1)
        return MaskData(
            rles=[self.rles[int(i)] for i in positions],
            boxes=self.boxes[positions],
            iou_preds=self.iou_preds[positions],
            points=self.points[positions],
            stability_score=self.stability_score[positions],
            crop_boxes=self.crop_boxes[positions],
        )

    @classmethod
    def concat(cls, parts: Sequence[MaskData]) -> MaskData:
        if not parts:
            return cls.empty()
        return cls(
            rles=[rle for part in parts for rle in part.rles],
            boxes=np.concatenate([p.boxes for p in parts]),
            iou_preds=np.concatenate([p.iou_preds for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            stability_score=np.concatenate([p.stability_score for p in parts]),
            crop_boxes=np.concatenate([p.crop_boxes for p in parts]),
        )


def records_from_mask_data(data: MaskData, output_mode: OutputMode = "binary_mask") -> list[MaskRecord]:
    """The generator's output records, ``segmentation`` encoded per ``output_mode``."""
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"unknown output_mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
    bboxes = box_xyxy_to_xywh(data.boxes).tolist()
    crops = box_xyxy_to_xywh(data.crop_boxes).tolist()
    points = data.points.tolist()
    ious = data.iou_preds.tolist()
    stabilities = data.stability_score.tolist()
    records: list[MaskRecord] = []
    for i, rle in enumerate(data.rles):
        segmentation: BoolArray | RLE | CocoRLE
        if output_mode == "binary_mask":
            segmentation = rle_to_mask(rle)
        elif output_mode == "coco_rle":
            segmentation = rle_to_coco(rle)
        else:
            segmentation = rle
        records.append(
            {
                "segmentation": segmentation,
                "area": area_from_rle(rle),
                "bbox": bboxes[i],
                "predicted_iou": ious[i],
                "point_coords": [points[i]],
                "stability_score": stabilities[i],
                "crop_box": crops[i],
            }
        )
    return records
