"""Uploads as compressed as the source: an embed sends the caller's JPEG/PNG/WebP file (or an
array as a lossless PNG when that is much smaller) and ``sam_session`` decodes it with the SDK's
own decoder, on the served tiny-test model.

- the choice of what travels (file, PNG, raw) and the bytes it puts on the wire;
- the same embedding as the raw path, bit for bit (``fetch_embedding``) and the same masks, for
  a photo, grayscale, RGBA, palette and EXIF-rotated files, WebP, and an array sent as PNG;
- one content id per picture however it travels (the second form is a cache hit);
- bad files (corrupt, truncated, a format the server does not decode, a decompression bomb,
  a content id the pixels do not hash to) are typed errors and the server keeps serving.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from sam_triton import InvalidInputError, Prompt, SamClient, errors
from sam_triton._core import content_id
from sam_triton._tensors import build_infer_request
from sam_triton.images import load_image, load_with_source
from sam_triton.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from sam_triton.uploads import encoded_upload, raw_bytes
from sam_triton_bench.images import synthetic_image
from sam_triton_common.contract import (
    CACHE_HIT,
    CONTENT_ID_MISMATCH,
    ENCODED_IMAGE,
    IMAGE,
    INPUT_SIZE,
    SAM1,
    SAM2,
    SESSION_HEADER,
    SESSION_ID,
)
from sam_triton_common.images import DEFAULT_MAX_PIXELS, decode_image
from sam_triton_common.transforms import prepare_image

from tests.conftest import ServedTriton

PHOTO = synthetic_image(300, 400, seed=3)
CLICKS = [Prompt(point_coords=[[120.0, 90.0]], point_labels=[1]), Prompt(box=[30, 40, 250, 200])]


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(Image.fromarray(PHOTO), "JPEG", exif=exif, quality=90)


def rgba_png() -> bytes:
    alpha = np.linspace(0, 255, PHOTO.shape[0] * PHOTO.shape[1]).reshape(PHOTO.shape[:2]).astype(np.uint8)
    return encoded(Image.fromarray(np.dstack([PHOTO, alpha]), "RGBA"), "PNG")


FILES = {
    "photo.jpg": encoded(Image.fromarray(PHOTO), "JPEG", quality=90),
    "gray.png": encoded(Image.fromarray(PHOTO[..., 1]), "PNG"),
    "gray.jpg": encoded(Image.fromarray(PHOTO[..., 0]), "JPEG"),
    "rgba.png": rgba_png(),
    "palette.png": encoded(Image.fromarray(PHOTO).quantize(64), "PNG"),
    "rotated.jpg": exif_rotated_jpeg(),
    "photo.webp": encoded(Image.fromarray(PHOTO), "WEBP", quality=80),
}


def png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(encoded(Image.new("L", (8, 8)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


# ----------------------------------------------------------------------------- what travels


def test_files_keep_their_bytes_and_arrays_do_not(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(FILES["photo.jpg"])
    for source in (path, str(path), FILES["photo.jpg"], Image.open(path)):
        loaded = load_with_source(source)  # type: ignore[arg-type]
        assert loaded.source == FILES["photo.jpg"]
        np.testing.assert_array_equal(loaded.rgb, load_image(FILES["photo.jpg"]))
    assert load_with_source(PHOTO).source is None
    assert load_with_source(encoded(Image.fromarray(PHOTO), "BMP")).source is None  # not decoded there
    drawn = Image.open(path)
    drawn.load()
    drawn.putpixel((0, 0), (255, 0, 0))  # the file no longer holds these pixels
    assert load_with_source(drawn).source is None


def test_upload_is_the_smallest_of_file_png_and_raw() -> None:
    jpeg = FILES["photo.jpg"]
    assert encoded_upload(PHOTO, SAM1, jpeg, "auto") == jpeg
    assert encoded_upload(PHOTO, SAM1, jpeg, "raw") is None
    # A photo-like array: its PNG would not be much smaller than the pixels, they go raw.
    assert encoded_upload(PHOTO, SAM2, None, "auto") is None
    flat = np.zeros((600, 800, 3), np.uint8)
    flat[100:300, 200:500] = (30, 200, 90)
    png = encoded_upload(flat, SAM1, None, "auto")
    assert png is not None and len(png) < raw_bytes(flat, SAM1) // 100
    np.testing.assert_array_equal(decode_image(png), flat)  # lossless
    # A file larger than the pixels (SAM 2 sends the original: 4x3 pixels are 36 bytes) stays home.
    small = np.asarray(Image.fromarray(PHOTO).resize((4, 3)))
    small_png = encoded(Image.fromarray(small), "PNG")
    assert len(small_png) > raw_bytes(small, SAM2)
    assert encoded_upload(small, SAM2, small_png, "auto") is None


# ----------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("name", sorted(FILES))
def test_server_decoder_gives_the_sdk_pixels(name: str) -> None:
    np.testing.assert_array_equal(decode_image(FILES[name]), load_image(FILES[name]))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xd8\xff\xe0 not really a jpeg", "cannot decode"),
        (FILES["photo.jpg"][: len(FILES["photo.jpg"]) // 2], "truncated or corrupt"),
        (encoded(Image.fromarray(PHOTO), "GIF"), "format GIF is not decoded here"),
        (encoded(Image.fromarray(PHOTO), "BMP"), "format BMP is not decoded here"),
        (png_with_size(9000, 9000), "9000x9000 = 81000000 pixels, over the limit of 67108864"),
        (png_with_size(100000, 100000), "over the limit of 67108864"),
    ],
)
def test_decoder_refuses_bad_files(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        decode_image(data, DEFAULT_MAX_PIXELS)


# ----------------------------------------------------------------------------- served


@pytest.fixture(scope="module")
def client(triton_server: ServedTriton) -> Iterator[SamClient]:
    with SamClient(triton_server.grpc_url, timeout=120) as c:
        yield c


def counted(url: str, mode: str = "auto") -> tuple[SamClient, list[int]]:
    sent: list[int] = []
    return SamClient(url, timeout=120, image_upload=mode, rpc_observer=lambda _, s, r: sent.append(s)), sent


def same_results(client: SamClient, a: Any, b: Any) -> None:
    np.testing.assert_array_equal(client.fetch_embedding(a), client.fetch_embedding(b))
    for prompt in CLICKS:
        pa, pb = client.predict(a, prompt), client.predict(b, prompt)
        np.testing.assert_array_equal(pa.masks, pb.masks)
        np.testing.assert_array_equal(pa.scores, pb.scores)


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_upload_embeds_exactly_the_raw_pixels(
    name: str, client: SamClient, triton_server: ServedTriton, tmp_path: Path
) -> None:
    data = FILES[name]
    rgb = load_image(data)
    tag = f"{name}-{tmp_path.name}"
    compressed, sent = counted(triton_server.grpc_url)
    raw = SamClient(triton_server.grpc_url, timeout=120, image_upload="raw")
    with compressed, raw:
        # Caller-named ids: each form is encoded on its own, so equal results mean equal pixels.
        from_file = compressed.embed(data, session_id=f"file-{tag}")
        assert max(sent) < len(data) + 200  # the file and the request's few names, not pixels
        from_pixels = raw.embed(rgb, session_id=f"raw-{tag}")
        assert from_file.original_size == from_pixels.original_size == rgb.shape[:2]
        same_results(client, from_file, from_pixels)


def test_one_content_id_however_the_picture_travels(client: SamClient, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    photo = Image.fromarray(synthetic_image(500, 700, seed=11))
    photo.save(path, quality=85)
    first = client.embed(path)  # content id of the decoded pixels, the file uploaded
    assert first.session_id == content_id(load_image(path)) and first.from_cache is False
    again = client.embed(load_image(path))  # the same pixels as an array: nothing to upload
    assert again.session_id == first.session_id and again.from_cache is True
    assert client.embed(Image.open(path)).from_cache is True


def test_arrays_travel_as_png_when_much_smaller(triton_server: ServedTriton) -> None:
    flat = np.full((700, 900, 3), 40, np.uint8)
    flat[200:500, 100:600] = (200, 180, 20)
    flat[0, 0] = (1, 2, 3)  # content of its own
    compressed, sent = counted(triton_server.grpc_url)
    raw, raw_sent = counted(triton_server.grpc_url, "raw")
    with compressed, raw:
        as_png = compressed.embed(flat, session_id="flat-png")
        as_raw = raw.embed(flat, session_id="flat-raw")
        assert max(sent) * 100 < max(raw_sent)
        same_results(compressed, as_png, as_raw)


def session_call(url: str, session_id: str, inputs: dict[str, np.ndarray]) -> None:
    """A ``sam_session`` embed as any client could send it, its error mapped as the SDK does."""
    tensors = {SESSION_ID: np.array([[session_id.encode()]], np.object_), **inputs}
    request = build_infer_request("sam_session", tensors, [CACHE_HIT])
    with grpc.insecure_channel(url) as channel:
        try:
            GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=((SESSION_HEADER, session_id),), timeout=120
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None


def file_tensor(data: bytes) -> np.ndarray:
    return np.array([[data]], dtype=np.object_)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x89PNG\r\n\x1a\n broken", "cannot decode"),
        (FILES["photo.jpg"][:1500], "truncated or corrupt"),
        (encoded(Image.fromarray(PHOTO), "GIF"), "format GIF is not decoded here"),
        (png_with_size(9000, 9000), "over the limit of 67108864"),
    ],
)
def test_server_refuses_bad_files_and_keeps_serving(
    data: bytes, match: str, client: SamClient, triton_server: ServedTriton
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        session_call(triton_server.grpc_url, "bad-file", {ENCODED_IMAGE: file_tensor(data)})
    handle = client.embed(FILES["photo.jpg"], session_id="after-bad-file")
    assert client.predict(handle, CLICKS[0]).masks.shape[1:] == PHOTO.shape[:2]


def test_server_refuses_a_content_id_its_pixels_do_not_hash_to(triton_server: ServedTriton) -> None:
    wrong = content_id(PHOTO[::-1].copy())
    with pytest.raises(InvalidInputError, match=CONTENT_ID_MISMATCH):
        session_call(triton_server.grpc_url, wrong, {ENCODED_IMAGE: file_tensor(FILES["gray.png"])})
    padded, size = prepare_image(PHOTO)
    both = {
        ENCODED_IMAGE: file_tensor(FILES["photo.jpg"]),
        IMAGE: padded[None],
        INPUT_SIZE: np.array([size], np.int32),
    }
    with pytest.raises(InvalidInputError, match="send one or the other"):
        session_call(triton_server.grpc_url, "both-forms", both)
