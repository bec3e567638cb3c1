"""Decoding images into the HxWx3 uint8 RGB array SAM expects: the one decoder of sam-triton.

The SDK runs it on what a caller holds (``sam_triton.images.load_image``) and ``sam_session``
runs it on an uploaded JPEG/PNG/WebP file, so a file sent as its own bytes becomes the very
pixels (hence masks and content ids) the SDK would have sent raw: same Pillow calls, same EXIF
orientation, same mode conversions. Every rejection is an :class:`InvalidInputError` that says
what was wrong and what is expected.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import CONTENT_ID_PREFIX
from .errors import InvalidInputError
from .transforms import IMAGE_SIZE, preprocess_shape

RGBImage = npt.NDArray[np.uint8]

DEFAULT_MAX_PIXELS = 8192 * 8192
"""Default upper bound on H*W; beyond it resizing alone costs seconds and gigabytes (and a
small compressed file that claims more is a decompression bomb)."""

MIN_SIDE = 2
"""Smallest accepted side: a 1-pixel side cannot be bilinearly resized meaningfully."""

ENCODED_FORMATS = ("JPEG", "PNG", "WEBP")
"""The file formats ``sam_session`` decodes from ``encoded_image`` (Pillow's format names)."""


def check_size(height: int, width: int, max_pixels: int | None) -> None:
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


def from_array(array: npt.NDArray[np.generic], channel_order: str = "RGB") -> RGBImage:
    """HW / HWx1 (gray, replicated), HWx2 (gray + alpha), HWx3, HWx4 (alpha dropped) uint8
    -> C-contiguous RGB; ``channel_order`` "BGR" reverses the colour channels (OpenCV)."""
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
    if channel_order == "BGR":
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def from_pil(image: Image.Image) -> RGBImage:
    """A PIL image, EXIF orientation applied (as every photo viewer does), in any mode."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode not in ("RGB", "L", "RGBA", "LA"):
        # Palette, CMYK, 16-bit, float...: let Pillow do the colour conversion.
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return from_array(np.asarray(image), "RGB")


def _open_encoded(data: bytes | str | os.PathLike[str], max_pixels: int | None) -> Image.Image:
    source: io.BytesIO | str | os.PathLike[str] = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        # Lazy: only the header is read here, so the size check runs before any pixel is decoded.
        return Image.open(source)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"image file not found: {data!s}") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own bound, at twice its warning size
        raise InvalidInputError(f"image is over the limit of {max_pixels} pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        what = "bytes" if isinstance(data, bytes) else f"file {data!s}"
        raise InvalidInputError(
            f"cannot decode image {what}: {exc}; expected PNG, JPEG or another Pillow format"
        ) from exc


def open_checked(
    data: bytes | str | os.PathLike[str], max_pixels: int | None, formats: tuple[str, ...] | None = None
) -> Image.Image:
    """Open and fully decode an image file, checking its size (from the header, before any pixel
    is decoded: a decompression bomb is refused unread) and, when given, its format."""
    img = _open_encoded(data, max_pixels)
    if formats is not None and img.format not in formats:
        raise InvalidInputError(f"image format {img.format} is not decoded here; expected one of {formats}")
    check_size(img.height, img.width, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"cannot decode image: {exc} (a truncated or corrupt file?)") from exc
    return img


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> RGBImage:
    """The RGB pixels of a JPEG, PNG or WebP file (what ``sam_session`` does with an upload)."""
    rgb = from_pil(open_checked(data, max_pixels, ENCODED_FORMATS))
    check_size(int(rgb.shape[0]), int(rgb.shape[1]), max_pixels)  # EXIF may have turned it
    return rgb


def content_id(rgb: RGBImage) -> str:
    """``sha256:<hex>`` of an RGB image's shape and pixels: equal images, equal ids.

    The original pixels (not the resized ones) are hashed: hashing is much cheaper than
    resizing, and a hit then skips the resize as well as the upload. The id of a file's pixels
    is the id of the file decoded, however it travelled.
    """
    digest = hashlib.sha256(b"sam-triton/rgb-uint8/v1")
    digest.update(struct.pack("<3Q", *rgb.shape))
    digest.update(np.ascontiguousarray(rgb).data.cast("B"))
    return CONTENT_ID_PREFIX + digest.hexdigest()
