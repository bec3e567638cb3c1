"""sam_triton.amg building blocks against segment_anything.utils.amg and torchvision."""

from __future__ import annotations

from collections.abc import Iterator

# The reference's remove_small_regions runs on real OpenCV (a dev dependency).
import cv2
import numpy as np
import pytest
import segment_anything.utils.amg as amg_ref
import torch
import torchvision.ops.boxes as torchvision_boxes
from sam_triton import amg
from sam_triton.errors import InvalidInputError
from sam_triton_common.amg._torch_sort import torch_unstable_argsort_descending


# --------------------------------------------------------------------------- grids and crops
@pytest.mark.parametrize("n", [1, 2, 3, 16, 32])
def test_build_point_grid(n: int) -> None:
    np.testing.assert_array_equal(amg.build_point_grid(n), amg_ref.build_point_grid(n))


@pytest.mark.parametrize(("n", "layers", "scale"), [(32, 0, 1), (32, 2, 2), (10, 1, 3), (16, 3, 2)])
def test_build_all_layer_point_grids(n: int, layers: int, scale: int) -> None:
    ours = amg.build_all_layer_point_grids(n, layers, scale)
    ref = amg_ref.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(1500, 2250), (480, 640), (333, 257), (64, 64), (7, 901)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", [512 / 1500, 0.0, 0.25])
def test_generate_crop_boxes(size: tuple[int, int], layers: int, overlap: float) -> None:
    assert amg.generate_crop_boxes(size, layers, overlap) == amg_ref.generate_crop_boxes(
        size, layers, overlap
    )


# --------------------------------------------------------------------------- scores and boxes
@pytest.mark.parametrize("offset", [1.0, 0.5, 0.7])
def test_calculate_stability_score(offset: float) -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((9, 37, 53)) * 3).astype(np.float32)
    logits[0] = -5.0  # empty union -> NaN in both
    logits[1, :3, :3] = np.float32(offset)  # values exactly on the threshold
    ours = amg.calculate_stability_score(logits, 0.0, offset)
    ref = amg_ref.calculate_stability_score(torch.from_numpy(logits), 0.0, offset).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


def test_box_helpers() -> None:
    rng = np.random.default_rng(1)
    boxes = rng.integers(0, 200, (30, 4))
    crop = [17, 23, 150, 190]
    np.testing.assert_array_equal(
        amg.uncrop_boxes_xyxy(boxes, crop), amg_ref.uncrop_boxes_xyxy(torch.from_numpy(boxes), crop).numpy()
    )
    points = rng.random((30, 2)) * 100
    np.testing.assert_array_equal(
        amg.uncrop_points(points, crop), amg_ref.uncrop_points(torch.from_numpy(points), crop).numpy()
    )
    for box in boxes:
        assert amg.box_xyxy_to_xywh(box).tolist() == amg_ref.box_xyxy_to_xywh(torch.from_numpy(box)).tolist()
    masks = rng.random((3, 133, 167)) < 0.5
    np.testing.assert_array_equal(
        amg.uncrop_masks(masks, crop, 300, 250),
        amg_ref.uncrop_masks(torch.from_numpy(masks), crop, 300, 250).numpy(),
    )


def test_is_box_near_crop_edge() -> None:
    rng = np.random.default_rng(2)
    crop = [100, 50, 300, 260]
    orig = [0, 0, 300, 400]
    # Boxes hugging every edge, exactly at atol, one past it, and inside.
    boxes = np.concatenate(
        [rng.integers(0, 210, (200, 4)), np.array([[0, 0, 200, 210], [20, 20, 180, 190], [21, 21, 179, 189]])]
    )
    ours = amg.is_box_near_crop_edge(boxes, crop, orig)
    ref = amg_ref.is_box_near_crop_edge(torch.from_numpy(boxes), crop, orig).numpy()
    np.testing.assert_array_equal(ours, ref)
    assert ours.any() and not ours.all()


# --------------------------------------------------------------------------- NMS
def _tv_batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, thr: float) -> np.ndarray:
    return torchvision_boxes.batched_nms(
        torch.from_numpy(boxes).float(), torch.from_numpy(scores), torch.from_numpy(idxs), thr
    ).numpy()


def _random_boxes(rng: np.random.Generator, n: int, span: int = 300) -> np.ndarray:
    x0 = rng.integers(0, span, n)
    y0 = rng.integers(0, span, n)
    return np.stack([x0, y0, x0 + rng.integers(0, 60, n), y0 + rng.integers(0, 60, n)], axis=1)


@pytest.mark.parametrize("n", [0, 1, 5, 200, 1000, 1001, 2500])
@pytest.mark.parametrize("levels", [1, 3, 0])  # 0: continuous scores, else that many distinct values
@pytest.mark.parametrize("thr", [0.0, 0.5, 0.7, 0.95])
def test_batched_nms_matches_torchvision(n: int, levels: int, thr: float) -> None:
    rng = np.random.default_rng(n * 7 + levels)
    boxes = _random_boxes(rng, n)
    if n >= 10:
        boxes[:5] = boxes[5:10]  # exact duplicates (IoU 1) ...
        boxes[10 % n] = [4, 4, 4, 9]  # ... and zero-area boxes (IoU NaN, never suppressing)
    scores = (
        rng.random(n).astype(np.float32) if levels == 0 else rng.integers(0, levels, n).astype(np.float32)
    )
    idxs = np.zeros(n)
    np.testing.assert_array_equal(
        amg.batched_nms(boxes, scores, idxs, thr), _tv_batched_nms(boxes, scores, idxs, thr)
    )


@pytest.mark.parametrize("n", [300, 1500])
def test_batched_nms_with_categories(n: int) -> None:
    rng = np.random.default_rng(5)
    boxes = _random_boxes(rng, n, span=80)
    scores = rng.integers(0, 4, n).astype(np.float32)
    idxs = rng.integers(0, 3, n)
    np.testing.assert_array_equal(
        amg.batched_nms(boxes, scores, idxs, 0.5), _tv_batched_nms(boxes, scores, idxs, 0.5)
    )


def test_nms_threshold_compared_in_double() -> None:
    # IoU exactly float32(0.7) = 0.69999999: torchvision compares it to the double 0.7 (not >).
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 7]], dtype=np.float32)
    scores = np.array([1.0, 0.5], dtype=np.float32)
    ref = torchvision_boxes.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7).numpy()
    np.testing.assert_array_equal(amg.nms(boxes, scores, 0.7), ref)
    ref = torchvision_boxes.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.6999999).numpy()
    np.testing.assert_array_equal(amg.nms(boxes, scores, 0.6999999), ref)


@pytest.mark.parametrize("n", [2, 16, 17, 100, 3000])
@pytest.mark.parametrize("levels", [1, 2, 5, 0])
def test_unstable_sort_emulation(n: int, levels: int) -> None:
    rng = np.random.default_rng(n + levels)
    keys = rng.random(n).astype(np.float32) if levels == 0 else rng.integers(0, levels, n).astype(np.float32)
    expected = torch.from_numpy(keys).sort(descending=True)[1].tolist()
    assert torch_unstable_argsort_descending(keys.tolist()) == expected


def test_unstable_sort_emulation_heap_fallback() -> None:
    # An organ-pipe sequence drives median-of-three introsort into its depth limit.
    half = np.arange(600, dtype=np.float32)
    keys = np.concatenate([half, half[::-1], half % 7])
    expected = torch.from_numpy(keys).sort(descending=True)[1].tolist()
    assert torch_unstable_argsort_descending(keys.tolist()) == expected


# --------------------------------------------------------------------------- small regions
def _region_cases() -> Iterator[np.ndarray]:
    rng = np.random.default_rng(7)
    for density in (0.1, 0.4, 0.55, 0.9):
        yield rng.random((41, 37)) < density
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False  # one hole of 100 px
    ring[2, 2] = True  # an island of 1 px, diagonal neighbour chain below
    ring[3, 3] = True
    yield ring
    yield np.zeros((9, 9), bool)
    yield np.ones((9, 9), bool)
    diag = np.eye(12, dtype=bool)  # 8-connected, 4-disconnected
    yield diag | diag[::-1]


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("thresh", [1, 5, 50, 1000])
def test_remove_small_regions_matches_reference(mode: str, thresh: int) -> None:
    for mask in _region_cases():
        ours, changed = amg.remove_small_regions(mask, thresh, mode)  # type: ignore[arg-type]
        ref, ref_changed = amg_ref.remove_small_regions(mask, thresh, mode)
        assert changed == ref_changed
        np.testing.assert_array_equal(ours, ref)


def test_connected_components_match_opencv() -> None:
    rng = np.random.default_rng(8)
    for _ in range(10):
        mask = rng.random((50, 45)) < rng.uniform(0.2, 0.7)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        comps = amg.connected_components(mask)
        assert comps.count == n - 1
        # OpenCV's block-based scan may number components in a slightly different order than
        # our raster order of first pixel; compare each of our components with the OpenCV
        # component that holds its first pixel.
        for k in range(comps.count):
            painted = comps.paint([k])
            first = np.unravel_index(np.argmax(painted), painted.shape)
            cv_label = labels[first]
            np.testing.assert_array_equal(painted, labels == cv_label)
            assert comps.sizes[k] == stats[cv_label, 4]


# --------------------------------------------------------------------------- params
def test_params_validation() -> None:
    with pytest.raises(InvalidInputError):
        amg.AmgParams(points_per_side=None)
    with pytest.raises(InvalidInputError):
        amg.AmgParams(point_grids=[amg.build_point_grid(4)])  # points_per_side still set
    with pytest.raises(InvalidInputError):
        amg.AmgParams(output_mode="png")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        amg.AmgParams(points_per_side=2, crop_n_layers=1, crop_n_points_downscale_factor=4)
    with pytest.raises(InvalidInputError):
        amg.AmgParams(points_per_side=None, point_grids=[amg.build_point_grid(4)], crop_n_layers=1)
    with pytest.raises(InvalidInputError):
        amg.AmgParams(pred_iou_thresh=float("nan"))
    grids = amg.AmgParams(points_per_side=None, point_grids=[amg.build_point_grid(3)] * 2, crop_n_layers=1)
    assert len(grids.layer_grids()) == 2
