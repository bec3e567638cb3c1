"""Pictures of results: coloured mask overlays with the prompts drawn on top, and RGBA cut-outs.

Pillow + numpy only, so the CLI and notebooks can show masks on a client-only install.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from sam_triton_common.rle import batched_mask_to_box

# Distinct, colour-blind-friendly-ish colours (Okabe-Ito first), cycled for many masks.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (120, 94, 240),
    (100, 143, 255),
    (254, 97, 0),
)
POSITIVE = (40, 220, 60)
NEGATIVE = (235, 40, 40)
BOX = (40, 220, 60)


def _check_masks(masks: npt.ArrayLike, size: tuple[int, int]) -> npt.NDArray[np.bool_]:
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != size:
        raise ValueError(f"masks have shape {arr.shape}; expected (K, {size[0]}, {size[1]}) for this image")
    return arr if arr.dtype == np.bool_ else arr > 0


def _edges(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Mask pixels with a 4-neighbour outside the mask: a 1-pixel outline."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def overlay(
    image: npt.NDArray[np.uint8],
    masks: npt.ArrayLike,
    *,
    point_coords: npt.ArrayLike | None = None,
    point_labels: npt.ArrayLike | None = None,
    box: npt.ArrayLike | None = None,
    alpha: float = 0.5,
    colors: Sequence[tuple[int, int, int]] = PALETTE,
) -> Image.Image:
    """The RGB image with each mask blended in its own colour and outlined, prompts on top.

    Args:
        image: HxWx3 uint8 RGB.
        masks: (K, H, W) or (H, W) masks (bool, or logits thresholded at 0).
        point_coords / point_labels: (N, 2) pixels and (N,) labels; foreground points are
            drawn green, background red.
        box: XYXY box, drawn as a rectangle.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype}{image.shape}")
    height, width = image.shape[:2]
    mask_arr = _check_masks(masks, (height, width))
    canvas = image.astype(np.float32)
    for k, mask in enumerate(mask_arr):
        color = np.array(colors[k % len(colors)], dtype=np.float32)
        canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * color
        canvas[_edges(mask)] = color
    out = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(out)
    # Marker size grows with the image so prompts stay visible on photos and on thumbnails.
    radius = max(2, round(max(height, width) / 120))
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
        draw.rectangle([x1, y1, x2, y2], outline=BOX, width=max(1, radius // 2))
    if point_coords is not None:
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.ones(len(coords)) if point_labels is None else np.asarray(point_labels).reshape(-1)
        for (x, y), label in zip(coords, labels, strict=True):
            if label < 0:
                continue  # padding / ignored points carry no meaning for the viewer
            fill = POSITIVE if label > 0 else NEGATIVE
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255))
    return out


def cutout(image: npt.NDArray[np.uint8], mask: npt.ArrayLike, *, crop: bool = True) -> Image.Image:
    """The masked object as RGBA (transparent outside the mask), cropped to its box by default.

    An empty mask gives a fully transparent image (1x1 when cropping).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype}{image.shape}")
    mask_arr = _check_masks(mask, (int(image.shape[0]), int(image.shape[1])))
    if mask_arr.shape[0] != 1:
        raise ValueError(f"cutout takes one mask, got {mask_arr.shape[0]}")
    m = mask_arr[0]
    rgba = np.dstack([image, np.where(m, 255, 0).astype(np.uint8)])
    if crop:
        if not m.any():
            return Image.new("RGBA", (1, 1), (0, 0, 0, 0))
        x0, y0, x1, y1 = (int(v) for v in batched_mask_to_box(m))
        rgba = rgba[y0 : y1 + 1, x0 : x1 + 1]  # reference boxes are inclusive
    return Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")
