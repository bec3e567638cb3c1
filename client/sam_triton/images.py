"""Turn whatever the user holds into the HxWx3 uint8 RGB array SAM expects, or say why not.

Accepted: numpy HWC uint8 RGB/BGR, grayscale HW or HxWx1 (replicated to RGB - medical
images), RGBA / LA (alpha dropped), PIL images (any mode), file paths and encoded bytes
(EXIF orientation applied, as every photo viewer does). Every rejection is an
:class:`~sam_triton.errors.InvalidInputError` that says what was wrong and what is expected.
"""

from __future__ import annotations

import io
import os
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from sam_triton_common.transforms import IMAGE_SIZE, preprocess_shape

from .errors import InvalidInputError

ImageFormat = Literal["RGB", "BGR"]

ImageInput = npt.NDArray[np.generic] | Image.Image | str | os.PathLike[str] | bytes | bytearray | memoryview
"""Anything :func:`load_image` accepts."""

DEFAULT_MAX_PIXELS = 8192 * 8192
"""Default upper bound on H*W; beyond it resizing alone costs seconds and gigabytes."""

MIN_SIDE = 2
"""Smallest accepted side: a 1-pixel side cannot be bilinearly resized meaningfully."""


def _check_size(height: int, width: int, max_pixels: int | None) -> None:
    if height == 0 or width == 0:
        raise InvalidInputError(
            f"image is empty ({height}x{width}); expected at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )
    if height < MIN_SIDE and width < MIN_SIDE:
        raise InvalidInputError(
            f"image is a single pixel ({height}x{width}); expected at least {MIN_SIDE} pixels on a side"
        )
    if min(preprocess_shape(height, width)) == 0:
        raise InvalidInputError(
            f"image is {height}x{width}; resized to a longest side of {IMAGE_SIZE} its short side would be "
            "0 pixels; expected an aspect ratio below 2048:1"
        )
    if max_pixels is not None and height * width > max_pixels:
        raise InvalidInputError(
            f"image is {height}x{width} = {height * width} pixels, over the limit of {max_pixels}; "
            "downscale it or raise max_pixels"
        )


def _from_array(array: npt.NDArray[np.generic], image_format: ImageFormat) -> npt.NDArray[np.uint8]:
    if array.dtype == np.bool_ or array.dtype != np.uint8:
        raise InvalidInputError(
            f"image dtype is {array.dtype}; expected uint8 with values in [0, 255] "
            "(convert with (x * 255).clip(0, 255).astype(np.uint8) or similar)"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InvalidInputError(f"image has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    channels = array.shape[2]
    if channels == 1:  # grayscale: the same intensity on R, G and B
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(np.repeat(array[:, :, :1], 3, axis=2))
    if channels not in (3, 4):
        raise InvalidInputError(f"image has {channels} channels; expected 1 (gray), 2 (gray+alpha), 3 or 4")
    rgb = array[:, :, :3]
    if image_format == "BGR":
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def _from_pil(image: Image.Image) -> npt.NDArray[np.uint8]:
    image = ImageOps.exif_transpose(image) or image
    if image.mode not in ("RGB", "L", "RGBA", "LA"):
        # Palette, CMYK, 16-bit, float...: let Pillow do the colour conversion.
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return _from_array(np.asarray(image), "RGB")


def _open_encoded(data: bytes | str | os.PathLike[str]) -> Image.Image:
    source: io.BytesIO | str | os.PathLike[str] = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        # Lazy: only the header is read here, so the size check runs before any pixel is decoded.
        return Image.open(source)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"image file not found: {data!s}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        what = "bytes" if isinstance(data, bytes) else f"file {data!s}"
        raise InvalidInputError(
            f"cannot decode image {what}: {exc}; expected PNG, JPEG or another Pillow format"
        ) from exc


def load_image(
    image: ImageInput,
    image_format: ImageFormat = "RGB",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> npt.NDArray[np.uint8]:
    """Load and validate an image; returns a C-contiguous HxWx3 uint8 RGB array.

    ``image_format`` describes the channel order of numpy input only ("BGR" for OpenCV arrays);
    decoded files and PIL images are RGB by construction.
    """
    if image_format not in ("RGB", "BGR"):
        raise InvalidInputError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            _check_size(int(image.shape[0]), int(image.shape[1]), max_pixels)
        rgb = _from_array(image, image_format)
    elif isinstance(image, Image.Image):
        _check_size(image.height, image.width, max_pixels)
        rgb = _from_pil(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        rgb = _from_pil(_checked_open(bytes(image), max_pixels))
    elif isinstance(image, (str, os.PathLike)):
        rgb = _from_pil(_checked_open(image, max_pixels))
    else:
        raise InvalidInputError(
            f"unsupported image type {type(image).__name__}; expected a numpy array, PIL image, path or bytes"
        )
    _check_size(int(rgb.shape[0]), int(rgb.shape[1]), max_pixels)
    return rgb


def _checked_open(data: bytes | str | os.PathLike[str], max_pixels: int | None) -> Image.Image:
    img = _open_encoded(data)
    _check_size(img.height, img.width, max_pixels)
    try:
        img.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"cannot decode image: {exc}") from exc
    return img
