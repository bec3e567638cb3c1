"""Prompt validation and encoding into sam_decoder tensors (SAM's ONNX conventions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sam_triton import InvalidInputError, Prompt
from sam_triton.prompts import encode_prompt, group_by_points
from segment_anything import SamPredictor

SIZE = (480, 640)  # (H, W)


def test_points_get_padding_point() -> None:
    enc = encode_prompt(Prompt([[320, 240], [10, 20]], [1, 0]), SIZE)
    assert enc.point_coords.dtype == np.float32 and enc.point_labels.dtype == np.float32
    np.testing.assert_allclose(enc.point_coords, [[512, 384], [16, 32], [0, 0]])
    np.testing.assert_array_equal(enc.point_labels, [1, 0, -1])
    assert enc.has_mask_input == 0.0 and not enc.mask_input.any()
    assert enc.mask_input.shape == (1, 256, 256)


def test_box_becomes_corner_points_without_padding() -> None:
    enc = encode_prompt(Prompt(box=[10, 20, 300, 400]), SIZE)
    np.testing.assert_allclose(enc.point_coords, [[16, 32], [480, 640]])
    np.testing.assert_array_equal(enc.point_labels, [2, 3])


def test_points_then_box() -> None:
    enc = encode_prompt(Prompt([[100, 100]], [1], box=[[10, 20, 300, 400]]), SIZE)
    np.testing.assert_array_equal(enc.point_labels, [1, 2, 3])
    assert enc.point_coords.shape == (3, 2)


def test_mask_only_and_empty_prompt() -> None:
    logits = np.random.default_rng(0).standard_normal((1, 256, 256)).astype(np.float32)
    enc = encode_prompt(Prompt(mask_input=logits), SIZE)
    assert enc.point_coords.shape == (0, 2) and enc.point_labels.shape == (0,)
    assert enc.has_mask_input == 1.0
    np.testing.assert_array_equal(enc.mask_input, logits)
    # (256, 256) and (1, 1, 256, 256) are accepted too
    assert Prompt(mask_input=logits[0]).mask_input.shape == (1, 256, 256)  # type: ignore[union-attr]
    assert Prompt(mask_input=logits[None]).mask_input.shape == (1, 256, 256)  # type: ignore[union-attr]
    # empty point array (not None) still gets SAM's padding point
    assert encode_prompt(Prompt(np.zeros((0, 2)), np.zeros(0)), SIZE).point_labels.tolist() == [-1]


def test_coords_are_float64_scaled_then_float32() -> None:
    h, w = 1411, 1411
    coords = np.array([[1410.5, 0.3]])
    enc = encode_prompt(Prompt(coords, [1]), (h, w))
    expected = (coords * (1024 / 1411)).astype(np.float32)
    np.testing.assert_array_equal(enc.point_coords[:1], expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"point_coords": [[1, 2]]}, "point_labels must be supplied"),
        ({"point_labels": [1]}, "without point_coords"),
        ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "NaN or infinite"),
        ({"point_coords": [[np.inf, 2]], "point_labels": [1]}, "NaN or infinite"),
        ({"point_coords": [1, 2], "point_labels": [1]}, r"expected \(N, 2\)"),
        ({"point_coords": [[1, 2, 3]], "point_labels": [1]}, r"expected \(N, 2\)"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 0]}, "one label per point"),
        ({"point_coords": [[1, 2]], "point_labels": [2]}, "unknown point label 2"),
        ({"point_coords": [[1, 2]], "point_labels": [0.5]}, "unknown point label 0.5"),
        ({"point_coords": [["a", 2]], "point_labels": [1]}, "must be numeric"),
        ({"box": [1, 2, 3]}, r"expected \(4,\)"),
        ({"box": [[1, 2, 3, 4], [1, 2, 3, 4]]}, r"expected \(4,\)"),
        ({"box": [5, 5, 1, 1]}, "x1 <= x2"),
        ({"box": [0, 0, np.nan, 1]}, "NaN"),
        ({"mask_input": np.zeros((1, 64, 64))}, r"expected \(1, 256, 256\)"),
        ({"mask_input": np.zeros((3, 256, 256))}, r"expected \(1, 256, 256\)"),
        ({"mask_input": np.full((1, 256, 256), np.nan)}, "NaN"),
    ],
)
def test_invalid_prompts(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Prompt(**kwargs)


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt([[641, 10]], [1]),
        Prompt([[-0.5, 10]], [1]),
        Prompt([[10, 481]], [1]),
        Prompt(box=[0, 0, 641, 100]),
        Prompt(box=[-1, 0, 10, 100]),
    ],
)
def test_out_of_image_rejected(prompt: Prompt) -> None:
    with pytest.raises(InvalidInputError, match="outside|reaches outside"):
        encode_prompt(prompt, SIZE)


def test_edges_are_inside() -> None:
    encode_prompt(Prompt([[640, 480], [0, 0]], [1, 0], box=[0, 0, 640, 480]), SIZE)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Prompt(box=[1])


def test_grouping_keeps_order_and_splits() -> None:
    prompts = [
        Prompt([[1, 1]], [1]),  # N=2
        Prompt(box=[0, 0, 5, 5]),  # N=2
        Prompt([[1, 1], [2, 2]], [1, 0]),  # N=3
        Prompt([[3, 3]], [1]),  # N=2
        Prompt(mask_input=np.zeros((1, 256, 256))),  # N=0
    ]
    enc = [encode_prompt(p, SIZE) for p in prompts]
    batches = group_by_points(enc, max_prompts=2)
    assert [b.indices for b in batches] == [(0, 1), (3,), (2,), (4,)]
    assert batches[0].point_coords.shape == (2, 2, 2)
    assert batches[0].mask_input.shape == (2, 1, 256, 256)
    assert batches[0].has_mask_input.shape == (2,)
    assert batches[3].point_coords.shape == (1, 0, 2)
    assert [p.num_points for p in prompts] == [2, 2, 3, 2, 0]


def test_encoded_prompts_through_the_exported_decoder_match_sam_predictor(
    tiny_repository: Path, tiny_sam: Any
) -> None:
    """Our decoder-side convention (box = labels 2/3, padding point, coordinates in the 1024
    frame), fed to the exported decoder graphs under onnxruntime the way the server runs them,
    gives SamPredictor's answer for the same prompt on the same embedding: points, a box, both,
    and a point labelled -1 (SAM's "not a point")."""
    from sam_triton import ImageEmbedding
    from sam_triton_bench.baselines import OrtHandle, OrtSam

    model = OrtSam(tiny_repository)
    embedding = np.random.default_rng(0).standard_normal((256, 64, 64)).astype(np.float32)
    input_size = (768, 1024)  # SIZE with its longest side at 1024
    handle = OrtHandle(ImageEmbedding(embedding, SIZE, input_size), model.split.image_features(embedding))
    reference = SamPredictor(tiny_sam)
    reference.features = torch.from_numpy(embedding)[None]
    reference.original_size, reference.input_size, reference.is_image_set = SIZE, input_size, True
    cases = [
        Prompt([[100, 50], [300, 200]], [1, 0]),
        Prompt(box=[10, 20, 300, 400]),
        Prompt([[100, 50]], [0], box=[10, 20, 300, 400]),
        Prompt([[100, 50], [5, 5]], [1, -1]),
    ]
    for prompt in cases:
        ours = model.predict(handle, prompt, multimask_output=True)
        with torch.no_grad():
            _, scores, low = reference.predict(
                prompt.point_coords, prompt.point_labels, prompt.box, multimask_output=True
            )
        np.testing.assert_allclose(ours.scores, scores, atol=1e-4)
        np.testing.assert_allclose(ours.low_res_logits, low, atol=1e-3 * max(1.0, float(np.abs(low).max())))
