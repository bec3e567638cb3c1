"""What an embed uploads: the image's own JPEG/PNG/WebP file, a lossless PNG of an array, or
the raw pixel tensor, whichever is fewer bytes.

``sam_session`` decodes a file with the very decoder the SDK uses
(``sam_triton_common.images``), so every choice gives the same pixels, embedding and masks,
and the same content id. The raw tensor is SAM 1's resized, padded 1024x1024 image (3 MiB) or
SAM 2's whole original image; a file is sent when it is smaller, which a photo's JPEG always
is. An array (no file) is PNG-compressed only when a sample of its rows says that the PNG
will be at most half the raw tensor: a PNG of a photo is rarely that small, and encoding it
costs more CPU time than most links save (BENCHMARKS.md "Remote users").
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from sam_triton_common.contract import IMAGE_SIZE, SAM1, Family

ImageUpload = Literal["auto", "raw"]
"""``auto``: the smallest of file, PNG and raw pixels; ``raw``: always the pixel tensor."""

PNG_LEVEL = 1
"""zlib level of an array's PNG: most of level 6's size for a fraction of its time."""
PNG_WORTH = 0.5
"""An array is PNG-encoded when its sample compresses to at most this share of the raw tensor."""
SAMPLE_ROWS = 32


def raw_bytes(rgb: npt.NDArray[np.uint8], family: Family) -> int:
    """Bytes of the pixel tensor a raw upload sends."""
    return IMAGE_SIZE * IMAGE_SIZE * 3 if family is SAM1 else int(rgb.nbytes)


def png_bytes(rgb: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    image.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def _png_pays(rgb: npt.NDArray[np.uint8], raw: int) -> bool:
    """Whether a PNG of ``rgb`` is likely at most PNG_WORTH of ``raw``, from a band of rows
    through the middle (a few percent of the full encode's time)."""
    height = int(rgb.shape[0])
    top = max(0, height // 2 - SAMPLE_ROWS // 2)
    sample = rgb[top : top + SAMPLE_ROWS]
    estimate = len(png_bytes(sample)) * height / sample.shape[0]
    return estimate <= PNG_WORTH * raw


def encoded_upload(
    rgb: npt.NDArray[np.uint8], family: Family, source: bytes | None, mode: ImageUpload
) -> bytes | None:
    """The file to upload in place of the pixel tensor, or None when the raw tensor is the
    smaller (or ``mode`` is "raw")."""
    if mode == "raw":
        return None
    raw = raw_bytes(rgb, family)
    if source is None and _png_pays(rgb, raw):
        source = png_bytes(rgb)
    return source if source is not None and len(source) < raw else None
