"""Connected components and small-region clean-up without OpenCV.

The reference's ``remove_small_regions`` calls ``cv2.connectedComponentsWithStats(mask, 8)``.
Here components are found on horizontal *runs* instead of pixels: runs are extracted with one
``np.diff``, runs on neighbouring rows that touch (8-connectivity: their column ranges overlap
or meet diagonally) are joined by a vectorised union-find, and the cleaned mask is painted
back from the surviving runs. The work is proportional to the number of runs, not pixels.

Components are numbered in raster order of their first pixel. cv2's block-based scan numbers
them almost the same way; the only place numbering matters is the "every island is small,
keep the largest" fallback when two largest islands tie in size exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]

__all__ = ["Components", "connected_components", "fill_holes_and_sprinkles", "remove_small_regions"]


@dataclass(frozen=True)
class Components:
    """8-connected components of a binary image, as runs.

    ``row``/``start``/``stop`` describe each run (columns ``start..stop-1`` of ``row``) in
    raster order; ``label`` gives its component, 0..n-1 in raster order of first pixel;
    ``sizes[k]`` is the pixel count of component k.
    """

    shape: tuple[int, int]
    row: Int64Array
    start: Int64Array
    stop: Int64Array
    label: Int64Array
    sizes: Int64Array

    @property
    def count(self) -> int:
        return int(self.sizes.size)

    def paint(self, components: npt.ArrayLike) -> BoolArray:
        """A mask holding exactly the pixels of the given component labels."""
        wanted = np.zeros(self.count, dtype=np.bool_)
        wanted[np.asarray(components, dtype=np.int64)] = True
        sel = wanted[self.label]
        h, w = self.shape
        # +1 where a selected run starts, -1 where it stops; a running sum marks its pixels.
        marks = np.zeros((h, w + 1), dtype=np.int32)
        np.add.at(marks, (self.row[sel], self.start[sel]), 1)
        np.add.at(marks, (self.row[sel], self.stop[sel]), -1)
        painted: BoolArray = np.cumsum(marks[:, :w], axis=1) > 0
        return painted


def _runs(mask: BoolArray) -> tuple[Int64Array, Int64Array, Int64Array]:
    h, w = mask.shape
    framed = np.zeros((h, w + 2), dtype=np.bool_)
    framed[:, 1:-1] = mask
    rows, cols = np.nonzero(framed[:, 1:] != framed[:, :-1])
    # Every row starts and ends with False, so transitions alternate start, stop, start...
    return rows[0::2].astype(np.int64), cols[0::2].astype(np.int64), cols[1::2].astype(np.int64)


def _touching_pairs(
    row: Int64Array, start: Int64Array, stop: Int64Array, width: int
) -> tuple[Int64Array, Int64Array]:
    """(a, b) run index pairs with b on the row below a and the two 8-connected."""
    # Keys order runs by (row, column); a row's keys never reach the next row's.
    stride = width + 2
    start_key = row * stride + start
    stop_key = row * stride + stop
    below = (row + 1) * stride
    # Run b (row below) touches run a when b.start <= a.stop and b.stop >= a.start
    # (stop is exclusive, so equality is the diagonal contact). Runs are sorted and disjoint,
    # so the partners of a form one contiguous index range [lo, hi).
    lo = np.searchsorted(stop_key, below + start, side="left")
    hi = np.searchsorted(start_key, below + stop, side="right")
    n_pairs = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(row.size, dtype=np.int64), n_pairs)
    first = np.repeat(lo, n_pairs)
    within = np.arange(a.size, dtype=np.int64) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    return a, first + within


def _union_roots(n: int, a: Int64Array, b: Int64Array) -> Int64Array:
    """Root (smallest member index) of every node's set, for undirected edges a-b."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        # Full path compression, then hook every root onto the smallest root it touches.
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        # Parents only ever point to smaller indices, so no cycle can form.
        np.minimum.at(parent, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])


def connected_components(mask: npt.ArrayLike) -> Components:
    """8-connected components of the True pixels of an (H, W) mask."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {arr.shape}")
    arr = arr if arr.dtype == np.bool_ else arr != 0
    row, start, stop = _runs(arr)
    a, b = _touching_pairs(row, start, stop, arr.shape[1])
    roots = _union_roots(row.size, a, b)
    # A root is its set's smallest run index, i.e. its raster-first run: numbering the
    # distinct roots in increasing order numbers components by first pixel.
    unique_roots, label = np.unique(roots, return_inverse=True)
    label = label.astype(np.int64).reshape(-1)
    sizes = np.bincount(label, weights=stop - start, minlength=unique_roots.size).astype(np.int64)
    return Components((int(arr.shape[0]), int(arr.shape[1])), row, start, stop, label, sizes)


def remove_small_regions(
    mask: npt.ArrayLike, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[BoolArray, bool]:
    """Fill holes (``"holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``.

    Returns the mask and whether it changed, like the reference: holes are 8-connected
    components of the background (the outside counts as one too); if every island is small
    the largest is kept. ``changed`` is True whenever a small region exists.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    arr = np.asarray(mask)
    arr = arr if arr.dtype == np.bool_ else arr != 0
    holes = mode == "holes"
    comps = connected_components(~arr if holes else arr)
    small = comps.sizes < area_thresh
    if not small.any():
        return arr, False
    if holes:
        return arr | comps.paint(np.flatnonzero(small)), True
    keep = np.flatnonzero(~small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(comps.sizes))])
    return comps.paint(keep), True


def fill_holes_and_sprinkles(
    logits: npt.ArrayLike, max_hole_area: float, max_sprinkle_area: float, threshold: float = 0.0
) -> npt.NDArray[np.float32]:
    """SAM 2's clean-up of (N, H, W) low-res mask logits (``SAM2Transforms.postprocess_masks``).

    Background components (logit <= ``threshold``, 8-connected, the outside included) of at
    most ``max_hole_area`` pixels become ``threshold + 10``; foreground components of at most
    ``max_sprinkle_area`` pixels become ``threshold - 10``. Both are found on the logits as
    given (the sprinkles are not looked for after the holes are filled), like the reference,
    whose CUDA extension (``sam2.utils.misc.get_connected_components``) this replaces on the
    CPU with :func:`connected_components`. An area of 0 turns that half off.
    """
    arr = np.asarray(logits, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected (N, H, W) mask logits, got shape {arr.shape}")
    out = arr.copy()
    limit = np.float32(threshold)
    for i in range(arr.shape[0]):
        for area, region, value in (
            (max_hole_area, arr[i] <= limit, limit + np.float32(10.0)),
            (max_sprinkle_area, arr[i] > limit, limit - np.float32(10.0)),
        ):
            if area <= 0:
                continue
            comps = connected_components(region)
            small = np.flatnonzero(comps.sizes <= area)
            if small.size:
                out[i][comps.paint(small)] = value
    return out
