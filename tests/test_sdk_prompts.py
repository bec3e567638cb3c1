"""Prompt validation and encoding into sam_decoder tensors (SAM's ONNX conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from sam_triton import InvalidInputError, Prompt
from sam_triton.prompts import encode_prompt, group_by_points

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


def test_encoding_matches_reference_prompt_encoder() -> None:
    """Our decoder-side convention (box = labels 2/3, padding point) equals PromptEncoder.forward.

    The served decoder embeds all points the way segment_anything's ONNX model does; that
    formula is reproduced here on a randomly initialised PromptEncoder and compared with the
    reference path that SamPredictor takes (points + pad, or points + box embedding).
    """
    torch = pytest.importorskip("torch")
    from segment_anything.modeling import PromptEncoder

    torch.manual_seed(0)
    pe = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    for w in pe.point_embeddings:
        torch.nn.init.normal_(w.weight)
    torch.nn.init.normal_(pe.not_a_point_embed.weight)

    def onnx_style(coords: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(coords)[None] + 0.5
        c = c / 1024
        emb = pe.pe_layer._pe_encoding(c)
        lab = torch.from_numpy(labels)[None].unsqueeze(-1)
        emb = emb * (lab != -1)
        emb = emb + pe.not_a_point_embed.weight * (lab == -1)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (lab == i)
        return emb

    cases = [
        Prompt([[100, 50], [300, 200]], [1, 0]),
        Prompt(box=[10, 20, 300, 400]),
        Prompt([[100, 50]], [0], box=[10, 20, 300, 400]),
        Prompt([[100, 50], [5, 5]], [1, -1]),
    ]
    from segment_anything.utils.transforms import ResizeLongestSide

    rls = ResizeLongestSide(1024)
    with torch.no_grad():
        for prompt in cases:
            enc = encode_prompt(prompt, SIZE)
            points = None
            if prompt.point_coords is not None:
                c = torch.as_tensor(rls.apply_coords(prompt.point_coords, SIZE), dtype=torch.float)[None]
                points = (c, torch.as_tensor(prompt.point_labels, dtype=torch.int)[None])
            boxes = None
            if prompt.box is not None:
                boxes = torch.as_tensor(rls.apply_boxes(prompt.box, SIZE), dtype=torch.float)[None]
            ref_sparse, _ = pe(points=points, boxes=boxes, masks=None)
            ours = onnx_style(enc.point_coords, enc.point_labels)
            torch.testing.assert_close(ours, ref_sparse, atol=1e-5, rtol=1e-5)
