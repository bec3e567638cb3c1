"""Point grids and crop boxes of the automatic mask generator (``segment_anything.utils.amg``).

The arithmetic (float ``linspace``, ``int()`` truncation, ``ceil`` of a float quotient) is
kept exactly so prompts and crops land on the same pixels as the reference's.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]

__all__ = ["build_point_grid", "build_all_layer_point_grids", "generate_crop_boxes"]


def build_point_grid(n_per_side: int) -> Float64Array:
    """(n*n, 2) (x, y) points in [0, 1]^2 at the centres of an n x n grid of cells, x fastest."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    half_cell = 1 / (2 * n_per_side)
    side = np.linspace(half_cell, 1 - half_cell, n_per_side)
    xs, ys = np.meshgrid(side, side)  # xs varies along columns, ys along rows
    grid: Float64Array = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    return grid


def layer_points_per_side(n_per_side: int, layer: int, scale_per_layer: int) -> int:
    """Points per side on crop layer ``layer``: ``int(n / scale**layer)``, truncated like the reference."""
    return int(n_per_side / (scale_per_layer**layer))


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[Float64Array]:
    """One grid per layer 0..n_layers, each ``scale_per_layer`` times sparser than the previous."""
    return [
        build_point_grid(layer_points_per_side(n_per_side, layer, scale_per_layer))
        for layer in range(n_layers + 1)
    ]


def _crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
    # n crops of this length, each overlapping the next by `overlap`, cover the side.
    return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer index: the full image, then (2^i)^2 crops on layer i.

    Crops of a layer are listed x-major (all crops of the first column of crops first),
    matching the reference's ``product(x0s, y0s)``.
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers: list[int] = [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _crop_len(im_w, per_side, overlap)
        crop_h = _crop_len(im_h, per_side, overlap)
        x_starts = [int((crop_w - overlap) * i) for i in range(per_side)]
        y_starts = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x_starts, y_starts):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers
