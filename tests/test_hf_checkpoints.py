"""Hugging Face checkpoints: ``sam-triton export --checkpoint DIR`` with a ``transformers``
``SamModel`` directory (``config.json`` + ``model.safetensors``).

No download is possible here, so the directory is made the way one is published: transformers'
own ``SamModel`` of a small ``SamConfig`` (the tiny-test geometry), seeded weights,
``save_pretrained``. Then:

- the conversion: for the same preprocessed input, transformers' ``SamModel`` loaded from the
  directory by transformers and segment_anything's ``Sam`` built from it by the exporter give
  the same image embeddings, low-res mask logits and IoU scores, for every prompt kind;
- the served model: the directory exported by the CLI (its type read from config.json) and
  served by a real tritonserver is held to segment_anything's ``SamPredictor`` with the converted
  weights, like any checkpoint (``sam_triton_bench.verify_served``'s cases and tolerances);
- bad directories are refused with what was expected and found, and nothing is written.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import ServedTriton, start_triton
from tests.test_predictor_e2e import make_scene

HF_SEED = 21
TINY_VISION = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "global_attn_indexes": [1],
}


def _seed_weights(model: torch.nn.Module, seed: int) -> None:
    """Weights of a trained model's scale on every tensor (transformers' own init leaves the
    vision encoder at ~1e-10 and the position embeddings at zero, which would hide a misnamed
    tensor): matrices ~ 1/sqrt(fan_in), norms around 1, biases and embeddings small noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("positional_embedding"):  # SAM's random Fourier matrix: N(0, 1)
                param.copy_(noise)
            elif name.endswith("pos_embed"):
                param.copy_(0.02 * noise)
            elif param.dim() >= 2:
                param.copy_(noise / math.sqrt(param[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


@pytest.fixture(scope="module")
def hf_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import SamConfig, SamModel

    model = SamModel(SamConfig(vision_config=TINY_VISION)).eval()
    _seed_weights(model, HF_SEED)
    directory = tmp_path_factory.mktemp("hf") / "sam-tiny-hf"
    model.save_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    return directory


@pytest.fixture(scope="module")
def converted(hf_directory: Path) -> Any:
    """segment_anything's Sam with the directory's weights, through the exporter's loader."""
    from sam_triton_export.model_builder import build_sam

    return build_sam("tiny-test", hf_directory)


def test_the_type_comes_from_config_json(hf_directory: Path) -> None:
    from sam_triton_export.hf_checkpoints import read_model_type

    assert read_model_type(hf_directory).name == "tiny-test"


def test_conversion_matches_transformers(hf_directory: Path, converted: Any) -> None:
    """Embeddings, low-res logits and scores of every prompt kind. The bound is tight but not
    zero: transformers' port normalises the decoder's two-way transformer with eps 1e-6 where
    segment_anything has 1e-5 (with its eps set to 1e-5 the two agree to ~3e-7)."""
    from segment_anything import SamPredictor
    from transformers import SamModel

    reference = SamModel.from_pretrained(hf_directory).eval()  # transformers' own loading
    predictor = SamPredictor(converted)
    h, w = 530, 410
    image = make_scene(h, w, seed=HF_SEED)
    with torch.no_grad():
        predictor.set_image(image)
        # The same preprocessed input for both: resized, normalised, padded to 1024.
        resized = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None]
        hf_embedding = reference.get_image_embeddings(converted.preprocess(resized.float()))
    ours = predictor.features
    scale = float(ours.abs().max())
    assert scale > 0.1  # a real embedding, not the near-zero one transformers' init gives
    torch.testing.assert_close(hf_embedding, ours, rtol=0, atol=1e-5 * scale)

    def to_1024(points: list[list[float]]) -> torch.Tensor:
        frame = predictor.transform.apply_coords(np.array(points, dtype=np.float64), (h, w))
        return torch.as_tensor(frame, dtype=torch.float32)

    two = to_1024([[0.3 * w, 0.4 * h], [0.7 * w, 0.6 * h]])
    box = to_1024([[0.2 * w, 0.25 * h], [0.75 * w, 0.8 * h]]).reshape(1, 4)
    fg, fg_bg, bg = torch.ones(1, 1), torch.tensor([[1.0, 0.0]]), torch.zeros(1, 1)
    # (name, multimask, transformers' prompt, segment_anything's prompt)
    cases: list[tuple[str, bool, dict[str, Any], dict[str, Any]]] = [
        (
            "point, multimask",
            True,
            {"input_points": two[None, None, :1], "input_labels": fg[None]},
            {"point_coords": two[None, :1], "point_labels": fg},
        ),
        (
            "fg + bg points",
            False,
            {"input_points": two[None, None], "input_labels": fg_bg[None]},
            {"point_coords": two[None], "point_labels": fg_bg},
        ),
        (
            "box",
            False,
            {"input_boxes": box[None]},
            {"point_coords": None, "point_labels": None, "boxes": box},
        ),
        (
            "box + bg point",
            True,
            {"input_boxes": box[None], "input_points": two[None, None, 1:], "input_labels": bg[None]},
            {"boxes": box, "point_coords": two[None, 1:], "point_labels": bg},
        ),
        (
            "two prompts at once",
            True,
            {"input_points": two[None, :, None], "input_labels": torch.ones(1, 2, 1)},
            {"point_coords": two[:, None], "point_labels": torch.ones(2, 1)},
        ),
    ]
    with torch.no_grad():
        _, _, first = predictor.predict_torch(**cases[0][3], multimask_output=False)
    # A low-res mask fed back in (mask_input refinement) with the same point.
    cases.append(
        (
            "point + mask_input",
            False,
            {**cases[0][2], "input_masks": first},
            {**cases[0][3], "mask_input": first},
        )
    )
    for name, multimask, hf_prompt, sam_prompt in cases:
        with torch.no_grad():
            _, scores, logits = predictor.predict_torch(**sam_prompt, multimask_output=multimask)
            out = reference(image_embeddings=hf_embedding, multimask_output=multimask, **hf_prompt)
        span = float(logits.max() - logits.min())
        assert span > 1, (name, span)  # masks with structure, not a constant
        torch.testing.assert_close(out.pred_masks[0], logits, rtol=0, atol=1e-4 * span, msg=name)
        torch.testing.assert_close(out.iou_scores[0], scores, rtol=0, atol=1e-4, msg=name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hf_directory: Path) -> Iterator[ServedTriton]:
    from sam_triton.cli import build_parser

    repository = tmp_path_factory.mktemp("hf-repo") / "model_repository"
    # No --model-type: config.json names it. Parity is checked over gRPC below.
    argv = ["export", "--checkpoint", str(hf_directory), "--repository", str(repository), "--no-verify"]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    server = start_triton(repository)
    try:
        yield server
    finally:
        server.process.stop()


def test_the_served_directory_matches_segment_anything(
    served: ServedTriton, hf_directory: Path, converted: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import build_parser
    from sam_triton_bench.verify_served import verify_server
    from sam_triton_common.contract import read_export_info

    info = read_export_info(served.repository)
    assert info is not None and info["model_type"] == "tiny-test"
    assert info["weights"]["checkpoint"] == str(hf_directory.resolve())
    images = [make_scene(333, 777, seed=HF_SEED)]  # an image no other test uses
    report = verify_server(
        served.grpc_url, converted, server_embeddings=True, images=images, log=lambda _: None
    )
    assert report.passed, report.format()
    assert report.embedding_max_abs < 1e-3 * report.embedding_range
    # The directory's content is what export.json records: the same directory is up to date.
    argv = ["export", "--checkpoint", str(hf_directory), "--repository", str(served.repository)]
    argv += ["--no-verify", "--if-changed"]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    assert "already holds this export (tiny-test" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


def _clip_directory(path: Path, hf_directory: Path) -> None:
    from transformers import CLIPConfig

    CLIPConfig(architectures=["CLIPModel"]).save_pretrained(path)  # as openai/clip-vit-base-patch32
    shutil.copy(hf_directory / "model.safetensors", path)


def _sam2_directory(path: Path, hf_directory: Path) -> None:
    from transformers import Sam2Config

    Sam2Config(architectures=["Sam2Model"]).save_pretrained(path)
    shutil.copy(hf_directory / "model.safetensors", path)


def _no_weights(path: Path, hf_directory: Path) -> None:
    path.mkdir()
    shutil.copy(hf_directory / "config.json", path)
    (path / "pytorch_model.bin").write_bytes(b"")


def _wrong_shape(path: Path, hf_directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    path.mkdir()
    shutil.copy(hf_directory / "config.json", path)
    state = load_file(str(hf_directory / "model.safetensors"))
    state["vision_encoder.layers.0.attn.qkv.weight"] = state["vision_encoder.layers.0.attn.qkv.weight"][:96]
    save_file(state, str(path / "model.safetensors"))


def _not_sam_activation(path: Path, hf_directory: Path) -> None:
    shutil.copytree(hf_directory, path)
    config = json.loads((path / "config.json").read_text())
    config["mask_decoder_config"]["hidden_act"] = "gelu"
    (path / "config.json").write_text(json.dumps(config))


BAD = {
    "clip": (_clip_directory, ["holds a model_type 'clip' (CLIPModel)", "expected model_type 'sam'"]),
    "sam2": (
        _sam2_directory,
        ["Hugging Face SAM 2 model (model_type 'sam2' (Sam2Model))", "not supported yet"],
    ),
    "no safetensors": (_no_weights, ["has no model.safetensors (found: config.json, pytorch_model.bin)"]),
    "wrong shape": (
        _wrong_shape,
        ["tensor vision_encoder.layers.0.attn.qkv.weight has shape [96, 64], tiny-test expects [192, 64]"],
    ),
    "another activation": (_not_sam_activation, ["mask_decoder_config.hidden_act is 'gelu'", "has 'relu'"]),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_directory_is_refused_and_nothing_is_written(
    kind: str, hf_directory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import build_parser

    make, expected = BAD[kind]
    directory = tmp_path / "bad"
    make(directory, hf_directory)
    repository = tmp_path / "model_repository"
    args = build_parser().parse_args(
        ["export", "--checkpoint", str(directory), "--repository", str(repository)]
    )
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not repository.exists()


def test_a_directory_of_another_type_than_asked_is_refused(
    hf_directory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import build_parser

    repository = tmp_path / "model_repository"
    argv = [
        "export",
        "--model-type",
        "vit_b",
        "--checkpoint",
        str(hf_directory),
        "--repository",
        str(repository),
    ]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert "holds a tiny-test (encoder width 64, depth 2)" in err and "vit_b (encoder width 768" in err, err
    # Only a directory names its type: a checkpoint file still needs --model-type.
    args = build_parser().parse_args(
        ["export", "--checkpoint", str(tmp_path / "sam.pth"), "--repository", str(repository)]
    )
    with pytest.raises(SystemExit) as exit_:
        args.handler(args)
    assert exit_.value.code == 2 and "give --model-type" in capsys.readouterr().err
    assert not repository.exists()
