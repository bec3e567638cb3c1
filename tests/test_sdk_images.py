"""Image loading: every accepted form, and a clear typed error for every rejected one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sam_triton import InvalidInputError, load_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_rgb_passthrough_and_bgr() -> None:
    out = load_image(RGB)
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(load_image(RGB[..., ::-1], "BGR"), RGB)


def test_gray_and_alpha() -> None:
    gray = RGB[..., 0]
    np.testing.assert_array_equal(load_image(gray), np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(load_image(gray[..., None]), np.stack([gray] * 3, -1))
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])
    np.testing.assert_array_equal(load_image(rgba), RGB)
    la = np.dstack([gray, gray])
    np.testing.assert_array_equal(load_image(la), np.stack([gray] * 3, -1))
    # BGRA: alpha dropped, channels swapped
    np.testing.assert_array_equal(load_image(np.dstack([RGB[..., ::-1], gray]), "BGR"), RGB)


def test_pil_modes() -> None:
    np.testing.assert_array_equal(load_image(Image.fromarray(RGB)), RGB)
    np.testing.assert_array_equal(load_image(Image.fromarray(RGB).convert("RGBA")), RGB)
    gray = Image.fromarray(RGB[..., 0])
    assert load_image(gray).shape == (20, 30, 3)
    pal = Image.fromarray(RGB).convert("P")
    np.testing.assert_array_equal(load_image(pal), np.asarray(pal.convert("RGB")))
    i16 = Image.fromarray(RGB[..., 0].astype(np.uint16) * 200).convert("I;16")
    assert load_image(i16).shape == (20, 30, 3)


# Smooth and asymmetric, so that JPEG's loss is small beside the difference between turns.
_YY, _XX = np.mgrid[0:20, 0:30]
GRADIENT = np.dstack([_XX * 8, _YY * 12, np.full_like(_XX, 128)]).astype(np.uint8)


def _exif_rotated_jpeg() -> bytes:
    img = Image.fromarray(GRADIENT)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=100)
    return buf.getvalue()


def test_bytes_paths_and_exif(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue()), RGB)
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue())
    np.testing.assert_array_equal(load_image(path), RGB)
    np.testing.assert_array_equal(load_image(str(path)), RGB)
    rotated = load_image(_exif_rotated_jpeg())
    assert rotated.shape == (30, 20, 3)  # transposed by the EXIF orientation
    # ... and turned the way it displays (orientation 6: 90 degrees clockwise), not the other
    # way or mirrored, which have the same shape (seen failing with the turn reversed).
    error = {
        name: float(np.abs(rotated.astype(np.int16) - turned.astype(np.int16)).mean())
        for name, turned in {
            "clockwise": np.rot90(GRADIENT, k=-1),
            "counter-clockwise": np.rot90(GRADIENT, k=1),
            "transposed": GRADIENT.transpose(1, 0, 2),
        }.items()
    }
    assert error["clockwise"] < 3 < min(error["counter-clockwise"], error["transposed"]), error


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "single pixel"),
        (np.zeros((1, 3000, 3), np.uint8), "short side would be 0"),
        (np.zeros((10, 10, 3), np.float32), "dtype is float32"),
        (np.zeros((10, 10, 3), np.bool_), "dtype is bool"),
        (np.zeros((10, 10, 3), np.uint16), "dtype is uint16"),
        (np.zeros((10, 10, 5), np.uint8), "5 channels"),
        (np.zeros((10, 10, 3, 1), np.uint8), "expected HxW"),
        (np.zeros((10,), np.uint8), "expected HxW"),
        (b"not an image", "cannot decode"),
        (b"", "cannot decode"),
        (12, "unsupported image type"),
        ("/nonexistent/file.png", "not found"),
    ],
)
def test_rejections(image: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load_image(image)  # type: ignore[arg-type]


def test_oversize_and_format() -> None:
    with pytest.raises(InvalidInputError, match="over the limit"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=9999)
    buf = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buf, format="PNG")
    with pytest.raises(InvalidInputError, match="over the limit"):
        load_image(buf.getvalue(), max_pixels=100)
    with pytest.raises(InvalidInputError, match="image_format"):
        load_image(RGB, "RGBA")  # type: ignore[arg-type]
    assert load_image(np.zeros((2, 1, 3), np.uint8)).shape == (2, 1, 3)
