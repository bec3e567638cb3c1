"""Parameters of automatic mask generation: ``SamAutomaticMaskGenerator``'s constructor arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInputError
from .data import OUTPUT_MODES, OutputMode
from .grids import build_all_layer_point_grids, layer_points_per_side

Float64Array = npt.NDArray[np.float64]

__all__ = ["AmgParams", "MAX_CROP_N_LAYERS"]

MAX_CROP_N_LAYERS = 16
"""A sanity bound, far beyond anything runnable (layer i has 4^i crops, each one encoder run):
checking a larger value would itself take unbounded time and memory."""


@dataclass(frozen=True)
class AmgParams:
    """Same names, defaults and meanings as ``SamAutomaticMaskGenerator.__init__``.

    Validated on construction (a typed :class:`~sam_triton.errors.InvalidInputError` instead
    of the reference's asserts and late crashes). ``mask_threshold`` is ``Sam.mask_threshold``.
    ``points_per_batch`` only changes how many prompts go to the decoder per call, never the
    result.
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Sequence[npt.ArrayLike] | None = field(default=None, compare=False)
    min_mask_region_area: int = 0
    output_mode: OutputMode = "binary_mask"
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise InvalidInputError("exactly one of points_per_side or point_grids must be given")
        if self.output_mode not in OUTPUT_MODES:
            raise InvalidInputError(
                f"unknown output_mode {self.output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}"
            )
        for name in ("points_per_batch", "crop_n_points_downscale_factor"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("crop_n_layers", "min_mask_region_area"):
            if int(getattr(self, name)) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.crop_n_layers > MAX_CROP_N_LAYERS:
            raise InvalidInputError(f"crop_n_layers must be <= {MAX_CROP_N_LAYERS}, got {self.crop_n_layers}")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "crop_nms_thresh",
            "crop_overlap_ratio",
            "mask_threshold",
        ):
            if not math.isfinite(float(getattr(self, name))):
                raise InvalidInputError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise InvalidInputError(f"crop_overlap_ratio must lie in [0, 1), got {self.crop_overlap_ratio}")
        if self.points_per_side is not None:
            for layer in range(self.crop_n_layers + 1):
                n = layer_points_per_side(self.points_per_side, layer, self.crop_n_points_downscale_factor)
                if n < 1:
                    raise InvalidInputError(
                        f"points_per_side={self.points_per_side} leaves no points on crop layer {layer} "
                        f"with crop_n_points_downscale_factor={self.crop_n_points_downscale_factor}"
                    )
        else:
            self._checked_grids()

    def _checked_grids(self) -> list[Float64Array]:
        assert self.point_grids is not None
        grids = [np.asarray(g, dtype=np.float64) for g in self.point_grids]
        if len(grids) < self.crop_n_layers + 1:
            raise InvalidInputError(
                f"point_grids has {len(grids)} grid(s) but crop_n_layers={self.crop_n_layers} "
                f"needs {self.crop_n_layers + 1}"
            )
        for i, grid in enumerate(grids):
            if grid.ndim != 2 or grid.shape[1] != 2 or grid.shape[0] == 0:
                raise InvalidInputError(
                    f"point_grids[{i}] must be a non-empty (n, 2) array, got {grid.shape}"
                )
            if not np.isfinite(grid).all() or grid.min() < 0.0 or grid.max() > 1.0:
                raise InvalidInputError(f"point_grids[{i}] must hold finite (x, y) values in [0, 1]")
        return grids

    def layer_grid_sizes(self) -> list[int]:
        """Points in the grid of every crop layer, counted without building the grids (so a
        request can be refused before a huge ``points_per_side`` allocates them)."""
        if self.points_per_side is None:
            return [len(g) for g in self.layer_grids()]
        return [
            layer_points_per_side(self.points_per_side, layer, self.crop_n_points_downscale_factor) ** 2
            for layer in range(self.crop_n_layers + 1)
        ]

    def layer_grids(self) -> list[Float64Array]:
        """Normalised (n, 2) point grid of every crop layer 0..crop_n_layers."""
        if self.points_per_side is None:
            return self._checked_grids()[: self.crop_n_layers + 1]
        return build_all_layer_point_grids(
            self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor
        )
