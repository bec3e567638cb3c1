"""Turn whatever the user holds into the HxWx3 uint8 RGB array SAM expects, or say why not.

Accepted: numpy HWC uint8 RGB/BGR, grayscale HW or HxWx1 (replicated to RGB - medical
images), RGBA / LA (alpha dropped), PIL images (any mode), file paths and encoded bytes
(EXIF orientation applied, as every photo viewer does). Every rejection is an
:class:`~sam_triton.errors.InvalidInputError` that says what was wrong and what is expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from sam_triton_common.images import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from sam_triton_common.images import ENCODED_FORMATS, check_size, from_array, from_pil, open_checked

from .errors import InvalidInputError

ImageFormat = Literal["RGB", "BGR"]

ImageInput = npt.NDArray[np.generic] | Image.Image | str | os.PathLike[str] | bytes | bytearray | memoryview
"""Anything :func:`load_image` accepts."""


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image as the SDK sends it: its pixels, and the file they were decoded from when that
    file is one the server decodes itself (JPEG/PNG/WebP), so an upload can be the file."""

    rgb: npt.NDArray[np.uint8]
    source: bytes | None = None


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
    return load_with_source(image, image_format, max_pixels=max_pixels).rgb


def load_with_source(
    image: ImageInput,
    image_format: ImageFormat = "RGB",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """:func:`load_image`, keeping the bytes of a JPEG/PNG/WebP file the pixels came from: a
    path or bytes, or a PIL image opened from a file whose decoding still gives its pixels."""
    if image_format not in ("RGB", "BGR"):
        raise InvalidInputError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
    source: bytes | None = None
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            check_size(int(image.shape[0]), int(image.shape[1]), max_pixels)
        rgb = from_array(image, image_format)
    elif isinstance(image, Image.Image):
        check_size(image.height, image.width, max_pixels)
        rgb = from_pil(image)
        source = _file_of(image, rgb, max_pixels)
    elif isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
        data = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else _read(image)
        opened = open_checked(data, max_pixels)
        rgb = from_pil(opened)
        source = data if opened.format in ENCODED_FORMATS else None
    else:
        raise InvalidInputError(
            f"unsupported image type {type(image).__name__}; expected a numpy array, PIL image, path or bytes"
        )
    check_size(int(rgb.shape[0]), int(rgb.shape[1]), max_pixels)
    return LoadedImage(rgb, source)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"image file not found: {path!s}") from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot read image file {path!s}: {exc}") from exc


def _file_of(image: Image.Image, rgb: npt.NDArray[np.uint8], max_pixels: int | None) -> bytes | None:
    """The file a PIL image was opened from, when decoding it gives ``rgb`` again (the image
    may have been drawn on or replaced since): one more decode, to upload far fewer bytes."""
    filename = getattr(image, "filename", "")
    if image.format not in ENCODED_FORMATS or not filename:
        return None
    try:
        data = Path(filename).read_bytes()
        decoded = from_pil(open_checked(data, max_pixels, ENCODED_FORMATS))
    except (OSError, InvalidInputError):
        return None
    return data if np.array_equal(decoded, rgb) else None
