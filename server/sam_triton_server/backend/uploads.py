"""``sam_session``'s compressed uploads: an ``encoded_image`` (a JPEG, PNG or WebP file) decoded
into the pixels a raw upload would have carried.

The decoder is the SDK's own (``sam_triton_common.images``: Pillow, EXIF orientation, mode
conversions), so a file and its pixels sent raw give one embedding. A content id names pixels:
an upload whose decoded pixels hash to another id is refused (``CONTENT_ID_MISMATCH``), so a
server whose Pillow decodes a file differently from the client's never stores an embedding
under a wrong id; the SDK then sends the pixels. Every refusal is an InvalidInputError; the
request holds nothing afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import CONTENT_ID_MISMATCH, CONTENT_ID_PREFIX, ENCODED_IMAGE
from sam_triton_common.errors import InvalidInputError
from sam_triton_common.images import content_id, decode_image


def decode_upload(encoded: npt.NDArray[Any], session_id: str, max_pixels: int) -> npt.NDArray[np.uint8]:
    """The HxWx3 uint8 RGB pixels of an ``encoded_image`` tensor (BYTES, one element)."""
    if encoded.size != 1:
        raise InvalidInputError(f"{ENCODED_IMAGE} must hold exactly one file, got {encoded.size}")
    data = encoded.reshape(-1)[0]
    if not isinstance(data, bytes):
        raise InvalidInputError(f"{ENCODED_IMAGE} must be BYTES")
    rgb = decode_image(data, max_pixels)
    if session_id.startswith(CONTENT_ID_PREFIX) and content_id(rgb) != session_id:
        raise InvalidInputError(
            f"{CONTENT_ID_MISMATCH} {session_id[:20]}...: this server's image decoder gives other "
            "pixels for the file than the client's; upload the pixels (image_upload='raw')"
        )
    return rgb
