"""Parameters of automatic mask generation: the constructor arguments of ``SamAutomaticMaskGenerator``
(SAM 1) and ``SAM2AutomaticMaskGenerator`` (SAM 2), which share all but two and one default."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInputError
from .data import OUTPUT_MODES, OutputMode
from .grids import build_all_layer_point_grids, layer_points_per_side

Float64Array = npt.NDArray[np.float64]

__all__ = ["AmgParams", "FAMILY_DEFAULTS", "MAX_CROP_N_LAYERS", "SAM2_ONLY", "family_params"]

MAX_CROP_N_LAYERS = 16
"""A sanity bound, far beyond anything runnable (layer i has 4^i crops, each one encoder run):
checking a larger value would itself take unbounded time and memory."""


@dataclass(frozen=True)
class AmgParams:
    """Same names, defaults and meanings as ``SamAutomaticMaskGenerator.__init__``, plus
    ``SAM2AutomaticMaskGenerator``'s ``use_m2m`` and ``multimask_output`` (a SAM 1 model only
    runs their defaults; :func:`family_params` gives a family's own defaults).

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
    use_m2m: bool = False
    multimask_output: bool = True

    def check_family(self, family: str) -> None:
        """InvalidInputError when a model of ``family`` (``contract.Family.name``) has no
        generator with these parameters: SAM 1's has neither ``use_m2m`` nor single masks."""
        if family == "sam2":
            return
        changed = [name for name, default in SAM2_ONLY.items() if getattr(self, name) != default]
        if changed:
            raise InvalidInputError(
                f"{' and '.join(f'{name}={getattr(self, name)}' for name in changed)}: only "
                f"SAM2AutomaticMaskGenerator has {'these' if len(changed) > 1 else 'this'}, and this "
                f"model is {family} (use the defaults: {SAM2_ONLY})"
            )

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


SAM2_ONLY: dict[str, bool] = {"use_m2m": False, "multimask_output": True}
"""SAM 2's extra parameters with the values that are SAM 1's fixed behaviour."""

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"sam1": {}, "sam2": {"pred_iou_thresh": 0.8}}
"""Where a family's generator defaults differ from :class:`AmgParams`' (SAM 1's)."""


def family_params(family: str, **explicit: Any) -> AmgParams:
    """The generator of ``family``'s parameters: ``explicit`` ones as given, the rest that
    family's reference defaults (``SAM2AutomaticMaskGenerator``: ``pred_iou_thresh=0.8``)."""
    if family not in FAMILY_DEFAULTS:
        raise InvalidInputError(f"no automatic mask generator for model family {family!r}")
    return AmgParams(**{**FAMILY_DEFAULTS[family], **explicit})
