"""sam_triton.transforms against segment_anything's ResizeLongestSide and Sam.postprocess_masks."""

from __future__ import annotations

import numpy as np
import pytest
import segment_anything.utils.transforms as ref_transforms
import torch
from sam_triton_common import transforms as T

F = torch.nn.functional

REF = ref_transforms.ResizeLongestSide(1024)

SIZES = [
    (2, 2),
    (3, 3),
    (1, 2),
    (2, 1),
    (1, 7),
    (7, 1),
    (1, 2000),  # a 1-pixel strip that still has a non-zero short side after resizing
    (2, 3000),
    (3000, 2),
    (17, 1023),
    (480, 640),
    (640, 480),
    (333, 1025),
    (1024, 1024),
    (1023, 1025),
    (1411, 1411),
    (1500, 2000),
    (2048, 1536),
]


def reference_postprocess(
    low: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Sam.postprocess_masks, verbatim (it is a method of a model; the maths needs no weights)."""
    x = torch.from_numpy(low)[None]
    x = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    x = F.interpolate(x, original_size, mode="bilinear", align_corners=False)
    return x[0].numpy()


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_preprocess_shape_matches_reference(h: int, w: int) -> None:
    assert T.preprocess_shape(h, w) == REF.get_preprocess_shape(h, w, 1024)


def test_preprocess_shape_many_sizes() -> None:
    rng = np.random.default_rng(0)
    for h, w in rng.integers(1, 5000, size=(2000, 2)):
        assert T.preprocess_shape(int(h), int(w)) == REF.get_preprocess_shape(int(h), int(w), 1024)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_resize_image_is_bit_exact(h: int, w: int) -> None:
    rng = np.random.default_rng(h * 7919 + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = T.resize_image(image)
    ref = REF.apply_image(image)
    assert ours.dtype == np.uint8
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_resize_non_contiguous_bgr_view() -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    view = image[..., ::-1]
    np.testing.assert_array_equal(T.resize_image(view), REF.apply_image(view))


def test_pad_and_prepare() -> None:
    image = np.full((300, 500, 3), 7, dtype=np.uint8)
    padded, input_size = T.prepare_image(image)
    assert input_size == (614, 1024)
    assert padded.shape == (1024, 1024, 3)
    assert (padded[614:] == 0).all()
    assert (padded[:614] == 7).all()
    with pytest.raises(ValueError):
        T.pad_image(np.zeros((1025, 3, 3), np.uint8))


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_apply_coords_and_boxes(h: int, w: int) -> None:
    rng = np.random.default_rng(5)
    coords = rng.uniform(0, max(h, w), (5, 2))
    np.testing.assert_array_equal(T.apply_coords(coords, (h, w)), REF.apply_coords(coords, (h, w)))
    boxes = rng.uniform(0, max(h, w), (3, 4))
    np.testing.assert_array_equal(T.apply_boxes(boxes, (h, w)), REF.apply_boxes(boxes, (h, w)))
    # the drop-in class used by RemoteSamPredictor.transform
    rls = T.ResizeLongestSide(1024)
    np.testing.assert_array_equal(rls.apply_coords(coords, (h, w)), REF.apply_coords(coords, (h, w)))
    np.testing.assert_array_equal(rls.apply_boxes(boxes, (h, w)), REF.apply_boxes(boxes, (h, w)))


def test_apply_coords_does_not_mutate_and_accepts_ints() -> None:
    coords = np.array([[10, 20]], dtype=np.int64)
    out = T.apply_coords(coords, (100, 200))
    assert coords.tolist() == [[10, 20]]
    np.testing.assert_array_equal(out, REF.apply_coords(coords, (100, 200)))


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_postprocess_masks_matches_reference(h: int, w: int) -> None:
    rng = np.random.default_rng(h + 31 * w)
    low = (rng.standard_normal((3, 256, 256)) * 8).astype(np.float32)
    input_size = T.preprocess_shape(h, w)
    ours = T.postprocess_masks(low, input_size, (h, w))
    ref = reference_postprocess(low, input_size, (h, w))
    assert ours.shape == ref.shape == (3, h, w)
    assert ours.dtype == np.float32
    # Same linear map, different summation order: float32 rounding only.
    np.testing.assert_allclose(ours, ref, atol=5e-4, rtol=1e-5)
    disagree = ((ours > 0) != (ref > 0)).mean()
    assert disagree < 1e-4


def test_postprocess_smooth_logits_threshold_identical() -> None:
    # Realistic logits (smooth blobs): the binary masks must agree pixel for pixel.
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    low = np.stack([20 - np.hypot(yy - 100, xx - 140) / 3, np.sin(xx / 9) * 5 + yy / 40 - 3])
    for h, w in [(480, 640), (1411, 1411), (2000, 1500), (5, 900)]:
        input_size = T.preprocess_shape(h, w)
        ours = T.masks_from_logits(T.postprocess_masks(low, input_size, (h, w)))
        ref = reference_postprocess(low.astype(np.float32), input_size, (h, w)) > 0
        assert (ours != ref).sum() <= 2


def test_postprocess_batched_leading_dims_and_errors() -> None:
    low = np.zeros((2, 3, 256, 256), np.float32)
    assert T.postprocess_masks(low, (512, 1024), (100, 200)).shape == (2, 3, 100, 200)
    with pytest.raises(ValueError):
        T.postprocess_masks(np.zeros((3, 128, 128), np.float32), (512, 1024), (100, 200))
    with pytest.raises(ValueError):
        T.postprocess_masks(low, (2000, 1024), (100, 200))


def test_interp_matrix_rows_sum_to_one() -> None:
    for a, b in [(256, 1024), (1024, 7), (5, 5), (1, 9), (9, 1)]:
        m = T._interp_matrix(a, b)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_postprocess_to_masks_is_the_thresholded_logits(h: int, w: int) -> None:
    # The blockwise threshold must not change a single pixel of `postprocess_masks(...) > 0`.
    rng = np.random.default_rng(h * 13 + w)
    low = (rng.standard_normal((2, 3, 256, 256)) * 8).astype(np.float32)
    input_size = T.preprocess_shape(h, w)
    logits = T.postprocess_masks(low, input_size, (h, w))
    masks = T.postprocess_to_masks(low, input_size, (h, w))
    assert masks.dtype == np.bool_ and masks.shape == (2, 3, h, w)
    np.testing.assert_array_equal(masks, T.masks_from_logits(logits))
    np.testing.assert_array_equal(T.postprocess_to_masks(low, input_size, (h, w), 1.5), logits > 1.5)


def test_banded_product_equals_dense_matrix() -> None:
    # Every band reads exactly the non-zero columns of the composite matrix.
    for input_len, original_len in [(1024, 1411), (768, 1500), (683, 480), (1, 2), (1024, 7)]:
        dense = T._axis_matrix(input_len, original_len)
        rebuilt = np.zeros_like(dense)
        for o0, o1, i0, i1, weights in T._axis_bands(input_len, original_len, 16, 1500):
            rebuilt[o0:o1, i0:i1] = weights
        np.testing.assert_array_equal(rebuilt, dense)


@pytest.mark.parametrize("input_len, original_len", [(1024, 1024), (1024, 1411), (1024, 100), (683, 4000)])
@pytest.mark.parametrize("max_block, other_len", [(64, 256), (16, 1024), (16, 4000)])
def test_band_products_stay_on_the_calling_thread(
    input_len: int, original_len: int, max_block: int, other_len: int
) -> None:
    # Larger products wake BLAS worker threads, whose spinning slows a co-located server.
    bands = T._axis_bands(input_len, original_len, max_block, other_len)
    assert bands[0][0] == 0 and bands[-1][1] == original_len
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
    nonzero = T._axis_matrix(input_len, original_len) != 0
    for o0, o1, i0, i1, _ in bands:
        assert o1 - o0 <= max_block
        assert o1 - o0 == 1 or (o1 - o0) * (i1 - i0) * other_len <= T._GEMM_WORK_LIMIT
        # ...and as large as that allows, so the Python loop stays short.
        if o1 - o0 < max_block and o1 < original_len:
            grown = np.flatnonzero(nonzero[o0 : o1 + 1].any(axis=0))
            assert (o1 + 1 - o0) * (grown[-1] + 1 - grown[0]) * other_len > T._GEMM_WORK_LIMIT
