"""Prompts: validation, and encoding into the ``sam_decoder`` tensors with SAM's conventions.

Encoding follows ``PromptEncoder`` so that every prompt gives the reference's result exactly:

* points first, each with its label (1 foreground, 0 background, -1 "not a point");
* a box becomes two more points, its corners, labelled 2 and 3, appended after the points;
* when points are given without a box, SAM appends one padding point (0, 0) labelled -1;
  with neither points nor a box nothing is appended (the sparse prompt is empty);
* ``mask_input`` (1, 256, 256) logits switch ``has_mask_input`` to 1, else zeros and 0.

The padding point is a real token in the decoder's attention, so prompts with different point
counts can not be padded to a common N without changing their masks: :func:`group_by_points`
groups equal-N prompts into one ``[P, N]`` request and leaves the others to separate requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sam_triton_common.transforms import LOW_RES_SIZE, apply_boxes, apply_coords

from .errors import InvalidInputError
from .results import PreviousMask

VALID_POINT_LABELS = (-1, 0, 1)
"""Labels a user point may carry; 2 and 3 are reserved for box corners (see module doc)."""

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _finite(name: str, arr: npt.NDArray[np.float64]) -> None:
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values; expected finite numbers")


def _as_float(name: str, value: npt.ArrayLike) -> F64:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric: {exc}") from exc
    _finite(name, arr)
    return arr


@dataclass(frozen=True, init=False, eq=False)
class Prompt:
    """One object's prompt, in original-image pixel coordinates (what ``SamPredictor.predict`` takes).

    Attributes (normalised copies of the constructor's arguments):
        point_coords: (N, 2) float64 (x, y) pixels, or None.
        point_labels: (N,) int64 labels (1 fg, 0 bg, -1 ignored), or None.
        box: (4,) float64 XYXY pixels, or None.
        mask_input: (1, 256, 256) float32 low-res logits from an earlier prediction, or None.
        previous_mask: the server-kept mask this prompt refines (``mask_input`` given a
            :class:`~sam_triton.PreviousMask`, from ``Prediction.mask_input()``), or None.
    """

    point_coords: F64 | None
    point_labels: npt.NDArray[np.int64] | None
    box: F64 | None
    mask_input: F32 | None
    previous_mask: PreviousMask | None

    def __init__(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        box: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | PreviousMask | None = None,
    ) -> None:
        coords, labels = _check_points(point_coords, point_labels)
        object.__setattr__(self, "point_coords", coords)
        object.__setattr__(self, "point_labels", labels)
        object.__setattr__(self, "box", _check_box(box))
        if isinstance(mask_input, PreviousMask):
            object.__setattr__(self, "previous_mask", mask_input)
            object.__setattr__(self, "mask_input", None)
        else:
            object.__setattr__(self, "previous_mask", None)
            object.__setattr__(self, "mask_input", _check_mask_input(mask_input))

    @property
    def num_points(self) -> int:
        """N of the encoded decoder input: points + box corners + the padding point."""
        n = 0 if self.point_coords is None else len(self.point_coords)
        if self.box is not None:
            n += 2
        elif self.point_coords is not None:
            n += 1
        return n

    def check_bounds(self, original_size: tuple[int, int]) -> None:
        """Reject coordinates outside the image ([0, W] x [0, H]; the far edge is a valid box corner)."""
        h, w = original_size
        if self.point_coords is not None and len(self.point_coords):
            xs, ys = self.point_coords[:, 0], self.point_coords[:, 1]
            bad = (xs < 0) | (xs > w) | (ys < 0) | (ys > h)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInputError(
                    f"point {i} at (x={xs[i]:g}, y={ys[i]:g}) lies outside the {w}x{h} (WxH) image; "
                    f"expected 0 <= x <= {w} and 0 <= y <= {h}"
                )
        if self.box is not None:
            x1, y1, x2, y2 = (float(v) for v in self.box)
            if min(x1, y1, x2, y2) < 0 or max(x1, x2) > w or max(y1, y2) > h:
                raise InvalidInputError(
                    f"box {[x1, y1, x2, y2]} reaches outside the {w}x{h} (WxH) image; "
                    f"expected 0 <= x <= {w} and 0 <= y <= {h}"
                )


def _check_points(
    point_coords: npt.ArrayLike | None, point_labels: npt.ArrayLike | None
) -> tuple[F64 | None, npt.NDArray[np.int64] | None]:
    if point_coords is None:
        if point_labels is not None:
            raise InvalidInputError("point_labels given without point_coords; pass both or neither")
        return None, None
    if point_labels is None:
        raise InvalidInputError("point_labels must be supplied if point_coords is supplied.")
    coords = _as_float("point_coords", point_coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InvalidInputError(f"point_coords has shape {coords.shape}; expected (N, 2) (x, y) pixels")
    labels_f = _as_float("point_labels", point_labels)
    if labels_f.ndim != 1 or labels_f.shape[0] != coords.shape[0]:
        raise InvalidInputError(
            f"point_labels has shape {labels_f.shape}; expected ({coords.shape[0]},), one label per point"
        )
    labels = labels_f.astype(np.int64)
    unknown = (labels_f != labels) | ~np.isin(labels, VALID_POINT_LABELS)
    if unknown.any():
        raise InvalidInputError(
            f"unknown point label {labels_f[unknown][0]:g}; expected 1 (foreground), 0 (background) "
            "or -1 (ignored point)"
        )
    return coords, labels


def _check_box(box: npt.ArrayLike | None) -> F64 | None:
    if box is None:
        return None
    arr = _as_float("box", box)
    if arr.size != 4 or arr.ndim not in (1, 2):
        raise InvalidInputError(f"box has shape {arr.shape}; expected (4,) XYXY pixels (one box per prompt)")
    arr = arr.reshape(4)
    if arr[2] < arr[0] or arr[3] < arr[1]:
        raise InvalidInputError(f"box {arr.tolist()} is not XYXY: expected x1 <= x2 and y1 <= y2")
    return arr


def _check_mask_input(mask_input: npt.ArrayLike | None) -> F32 | None:
    if mask_input is None:
        return None
    arr = _as_float("mask_input", mask_input)
    if (
        arr.ndim not in (2, 3, 4)
        or arr.shape[-2:] != (LOW_RES_SIZE, LOW_RES_SIZE)
        or arr.size != LOW_RES_SIZE**2
    ):
        raise InvalidInputError(
            f"mask_input has shape {arr.shape}; expected (1, {LOW_RES_SIZE}, {LOW_RES_SIZE}) low-res logits "
            "(the third value returned by predict)"
        )
    return arr.reshape(1, LOW_RES_SIZE, LOW_RES_SIZE).astype(np.float32)


@dataclass(frozen=True, eq=False)
class EncodedPrompt:
    """One prompt as ``sam_decoder`` rows, already in the 1024 frame."""

    point_coords: F32  # (N, 2)
    point_labels: F32  # (N,)
    mask_input: F32  # (1, 256, 256)
    has_mask_input: float
    previous_mask: PreviousMask | None = None  # refines a server-kept mask instead


def encode_prompt(
    prompt: Prompt, original_size: tuple[int, int], *, check_bounds: bool = True
) -> EncodedPrompt:
    """Transform a prompt to decoder inputs for an image of ``original_size`` (H, W)."""
    if check_bounds:
        prompt.check_bounds(original_size)
    coords: list[F64] = []
    labels: list[F64] = []
    if prompt.point_coords is not None and prompt.point_labels is not None:
        coords.append(apply_coords(prompt.point_coords, original_size))
        labels.append(prompt.point_labels.astype(np.float64))
    if prompt.box is not None:
        coords.append(apply_boxes(prompt.box, original_size).reshape(2, 2))
        labels.append(np.array([2.0, 3.0]))
    elif prompt.point_coords is not None:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    return encoded_rows(prompt, coords, labels)


def encoded_rows(prompt: Prompt, coords: Sequence[F64], labels: Sequence[F64]) -> EncodedPrompt:
    """The decoder rows of ``prompt`` from its coordinate and label pieces (any family)."""
    # float64 math then float32, like the reference's torch.as_tensor(..., dtype=torch.float).
    point_coords = (np.concatenate(coords) if coords else np.zeros((0, 2))).astype(np.float32)
    point_labels = (np.concatenate(labels) if labels else np.zeros((0,))).astype(np.float32)
    if prompt.mask_input is not None:
        return EncodedPrompt(point_coords, point_labels, prompt.mask_input, 1.0)
    return EncodedPrompt(
        point_coords,
        point_labels,
        np.zeros((1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
        0.0,
        prompt.previous_mask,
    )


@dataclass(frozen=True, eq=False)
class PromptBatch:
    """Equal-N prompts stacked into ``[P, ...]`` decoder tensors; ``indices`` are their caller positions."""

    indices: tuple[int, ...]
    point_coords: F32  # (P, N, 2)
    point_labels: F32  # (P, N)
    mask_input: F32  # (P, 1, 256, 256)
    has_mask_input: F32  # (P,)
    previous_masks: tuple[PreviousMask | None, ...] = ()  # per prompt; () when none refines one

    @property
    def refines_kept_masks(self) -> bool:
        return any(m is not None for m in self.previous_masks)


def group_by_points(encoded: Sequence[EncodedPrompt], max_prompts: int) -> list[PromptBatch]:
    """Stack prompts with the same N into batches of at most ``max_prompts`` (order-stable)."""
    if max_prompts < 1:
        raise ValueError("max_prompts must be >= 1")
    by_n: dict[int, list[int]] = {}
    for i, enc in enumerate(encoded):
        by_n.setdefault(len(enc.point_labels), []).append(i)
    batches: list[PromptBatch] = []
    for idx in by_n.values():
        for start in range(0, len(idx), max_prompts):
            chunk = idx[start : start + max_prompts]
            items = [encoded[i] for i in chunk]
            batches.append(
                PromptBatch(
                    indices=tuple(chunk),
                    point_coords=np.stack([e.point_coords for e in items]),
                    point_labels=np.stack([e.point_labels for e in items]),
                    mask_input=np.stack([e.mask_input for e in items]),
                    has_mask_input=np.array([e.has_mask_input for e in items], dtype=np.float32),
                    previous_masks=tuple(e.previous_mask for e in items),
                )
            )
    return batches


def as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> tuple[list[Prompt], bool]:
    """Normalise one prompt or a sequence; the flag says whether a single prompt was given."""
    if isinstance(prompts, Prompt):
        return [prompts], True
    items = list(prompts)
    if not items:
        raise InvalidInputError("no prompts given; expected a Prompt or a non-empty list of Prompts")
    for i, p in enumerate(items):
        if not isinstance(p, Prompt):
            raise InvalidInputError(f"prompt {i} is a {type(p).__name__}; expected sam_triton.Prompt")
    return items, False
