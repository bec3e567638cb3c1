"""The batched decoder ONNX (B images x P prompts x N points) against segment_anything's own
PromptEncoder + MaskDecoder, prompt by prompt; and the encoder ONNX against Sam.preprocess +
image_encoder for images of several sizes in one batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sam_triton_common.contract import DECODER_MODEL, ENCODER_MODEL, IMAGE_FEATURES_FILE, PROMPT_DECODER_FILE
from sam_triton_server.backend.ort import create_session
from sam_triton_server.backend.prompt_decoder import PromptDecoder


@pytest.fixture(scope="module")
def sam(tiny_sam: Any) -> Any:
    """The session's tiny-test Sam: the weights the session's repository was exported from."""
    return tiny_sam


@pytest.fixture(scope="module")
def onnx_dir(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The graphs export_decoder, export_session_decoder and export_encoder wrote into the
    session's repository (no export of this module's own), under the names used here."""
    out = tmp_path_factory.mktemp("parity")
    decoder, encoder = (tiny_repository / model / "1" for model in (DECODER_MODEL, ENCODER_MODEL))
    graphs = {
        "decoder.onnx": decoder / "model.onnx",
        "image_features.onnx": decoder / IMAGE_FEATURES_FILE,
        "prompt_decoder.onnx": decoder / PROMPT_DECODER_FILE,
        "encoder.onnx": encoder / "model.onnx",
    }
    for name, graph in graphs.items():
        assert graph.is_file(), graph
        (out / name).symlink_to(graph)
    return out


def _prompts(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Three prompts of equal N=3 (one call): 2 points + padding, point + box, bg point + box."""
    box = np.sort(rng.uniform(50, 900, (2, 2)), axis=0).reshape(4)
    return [
        {"points": rng.uniform(0, 1024, (2, 2)), "labels": np.array([1.0, 0.0]), "box": None},
        {"points": rng.uniform(0, 1024, (1, 2)), "labels": np.array([1.0]), "box": box},
        {"points": rng.uniform(0, 1024, (1, 2)), "labels": np.array([0.0]), "box": box + 20},
    ]


def _onnx_prompt(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if p["box"] is None:
        return np.concatenate([p["points"], [[0.0, 0.0]]]), np.concatenate([p["labels"], [-1.0]])
    return np.concatenate([p["points"], p["box"].reshape(2, 2)]), np.concatenate([p["labels"], [2.0, 3.0]])


def _reference(
    sam: Any, embedding: torch.Tensor, p: dict[str, Any], mask: np.ndarray | None, multimask: bool
):
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(
            points=(torch.tensor(p["points"][None], dtype=torch.float32), torch.tensor(p["labels"][None])),
            boxes=None if p["box"] is None else torch.tensor(p["box"][None], dtype=torch.float32),
            masks=None if mask is None else torch.from_numpy(mask[None]),
        )
        masks, scores = sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    return masks[0].numpy(), scores[0].numpy()


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_decoder_matches_reference(sam: Any, onnx_dir: Path, multimask: bool) -> None:
    rng = np.random.default_rng(0)
    images, prompts = 2, 3
    embeddings = rng.normal(0, 1, (images, 256, 64, 64)).astype(np.float32)
    prompt_sets = [_prompts(rng) for _ in range(images)]
    masks_in = rng.normal(0, 3, (images, prompts, 1, 256, 256)).astype(np.float32)
    has_mask = np.array([[1, 0, 1], [0, 1, 0]], np.float32)  # mask_input on some prompts only
    coords = np.stack([np.stack([_onnx_prompt(p)[0] for p in ps]) for ps in prompt_sets]).astype(np.float32)
    labels = np.stack([np.stack([_onnx_prompt(p)[1] for p in ps]) for ps in prompt_sets]).astype(np.float32)
    session = create_session(onnx_dir / "decoder.onnx")
    low_res, iou = session.run(
        None,
        {
            "image_embeddings": embeddings,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": masks_in,
            "has_mask_input": has_mask,
            "multimask_output": np.full((images, 1), multimask),
        },
    )
    k = 3 if multimask else 1
    assert low_res.shape == (images, prompts, k, 256, 256) and iou.shape == (images, prompts, k)
    for b in range(images):
        for p in range(prompts):
            mask = masks_in[b, p] if has_mask[b, p] else None
            ref_masks, ref_scores = _reference(
                sam, torch.from_numpy(embeddings[b]), prompt_sets[b][p], mask, multimask
            )
            np.testing.assert_allclose(low_res[b, p], ref_masks, atol=1e-4, rtol=0)
            np.testing.assert_allclose(iou[b, p], ref_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("multimask", [True, False])
def test_split_decoder_matches_full_decoder_and_reference(sam: Any, onnx_dir: Path, multimask: bool) -> None:
    """sam_session's mask-free path: features once per embedding, then P prompts per call."""
    rng = np.random.default_rng(2)
    embedding = rng.normal(0, 1, (256, 64, 64)).astype(np.float32)
    prompts = _prompts(rng)
    coords = np.stack([_onnx_prompt(p)[0] for p in prompts])[None].astype(np.float32)
    labels = np.stack([_onnx_prompt(p)[1] for p in prompts])[None].astype(np.float32)
    split = PromptDecoder(
        create_session(onnx_dir / "image_features.onnx"), create_session(onnx_dir / "prompt_decoder.onnx")
    )
    features = split.image_features(embedding)
    low_res, iou = split.run(features, coords, labels, np.full((1, 1), multimask))
    full_low_res, full_iou = create_session(onnx_dir / "decoder.onnx").run(
        None,
        {
            "image_embeddings": embedding[None],
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": np.zeros((1, 3, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros((1, 3), np.float32),
            "multimask_output": np.full((1, 1), multimask),
        },
    )
    np.testing.assert_allclose(low_res, full_low_res, atol=1e-5, rtol=0)
    np.testing.assert_allclose(iou, full_iou, atol=1e-6, rtol=0)
    for p, prompt in enumerate(prompts):
        ref_masks, ref_scores = _reference(sam, torch.from_numpy(embedding), prompt, None, multimask)
        np.testing.assert_allclose(low_res[0, p], ref_masks, atol=1e-4, rtol=0)
        np.testing.assert_allclose(iou[0, p], ref_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cpu_runtime", ["onnxruntime", "openvino"])
def test_encoder_batch_of_different_sizes(sam: Any, onnx_dir: Path, cpu_runtime: str) -> None:
    """Both CPU runtimes the served encoder can run on, one batch of two sizes."""
    rng = np.random.default_rng(1)
    sizes = [(1024, 768), (600, 1024)]
    batch = np.zeros((2, 1024, 1024, 3), np.uint8)
    references = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        batch[i, :h, :w] = image
        with torch.no_grad():
            x = sam.preprocess(torch.from_numpy(image).permute(2, 0, 1).float())
            references.append(sam.image_encoder(x[None])[0].numpy())
    session = create_session(onnx_dir / "encoder.onnx", cpu_runtime=cpu_runtime)
    assert ("OpenVINO" in session.get_providers()[0]) == (cpu_runtime == "openvino")
    (out,) = session.run(None, {"image": batch, "input_size": np.array(sizes, np.int32)})
    assert out.shape == (2, 256, 64, 64) and out.dtype == np.float32
    for i in range(2):
        np.testing.assert_allclose(out[i], references[i], atol=1e-4, rtol=0)
