"""The SDK's SAM 2 side: how a SAM 2 image and its prompts become served tensors.

The family's facts are ``sam_triton_common.contract.SAM2``. Its encoder takes the whole
original image (the server resizes it, exactly as ``SAM2Transforms`` does), so the client
sends the pixels as they are. Prompts follow ``SAM2ImagePredictor``: coordinates scaled by
1024/W and 1024/H (``normalize_coords=True``), a box entered as two corner points (labels
2, 3) before the points, and the -1 padding point its prompt encoder always appends.
Masks come back through ``transforms.SQUARE_INPUT`` (256 -> original size in one resize).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import IMAGE, IMAGE_SIZE

from .prompts import EncodedPrompt, Prompt, encoded_rows


def scale_coords(coords: npt.ArrayLike, original_size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """(..., 2) XY pixel coordinates into SAM 2's 1024 frame (each axis scaled on its own)."""
    h, w = original_size
    scaled: npt.NDArray[np.float64] = np.asarray(coords, dtype=np.float64) * np.array(
        [IMAGE_SIZE / w, IMAGE_SIZE / h]
    )
    return scaled


def encode_prompt(
    prompt: Prompt, original_size: tuple[int, int], *, check_bounds: bool = True
) -> EncodedPrompt:
    """``SAM2ImagePredictor._prep_prompts`` + ``_predict``'s merge of box and points."""
    if check_bounds:
        prompt.check_bounds(original_size)
    coords: list[npt.NDArray[np.float64]] = []
    labels: list[npt.NDArray[np.float64]] = []
    if prompt.box is not None:
        coords.append(scale_coords(np.asarray(prompt.box, dtype=np.float64).reshape(2, 2), original_size))
        labels.append(np.array([2.0, 3.0]))
    if prompt.point_coords is not None and prompt.point_labels is not None:
        coords.append(scale_coords(prompt.point_coords, original_size))
        labels.append(prompt.point_labels.astype(np.float64))
    if coords:  # the prompt encoder pads whenever there is a point (boxes are points here)
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    return encoded_rows(prompt, coords, labels)


def encoder_inputs(rgb: npt.NDArray[np.uint8]) -> dict[str, npt.NDArray[Any]]:
    """The whole HxWx3 image, batch of one: the graph resizes it."""
    return {IMAGE: np.ascontiguousarray(rgb)[None]}
