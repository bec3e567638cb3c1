"""Hugging Face checkpoints: ``sam-triton export --checkpoint DIR`` with a ``transformers``
``SamModel`` directory (``config.json`` + ``model.safetensors``, or an index and its shards) or a
SAM 2.1 ``Sam2VideoModel`` one (as ``facebook/sam2.1-hiera-*`` are published).

No download is possible here, so the directory is made the way one is published: transformers'
own ``SamModel`` of a small ``SamConfig`` (the tiny-test geometry), seeded weights,
``save_pretrained``. Then:

- the conversion: for the same preprocessed input, transformers' ``SamModel`` loaded from the
  directory by transformers and segment_anything's ``Sam`` built from it by the exporter give
  the same image embeddings, low-res mask logits and IoU scores, for every prompt kind;
- the served model: the directory exported by the CLI (its type read from config.json) and
  served by a real tritonserver is held to segment_anything's ``SamPredictor`` with the converted
  weights, like any checkpoint (``sam_triton_bench.verify_served``'s cases and tolerances);
- SAM 2.1: a ``Sam2VideoModel`` directory holding the session's seeded official checkpoint
  converts back to exactly that state dict; ``transformers``' ``Sam2Model`` (loaded from the
  directory by transformers, as users load ``facebook/sam2.1-hiera-*``) and ``sam2``'s
  ``SAM2ImagePredictor`` on the converted model agree on the same preprocessed image, and so do
  transformers' video modules and sam2's; the directory's CLI export is byte for byte the
  official checkpoint's export, the repository ``test_sam2`` serves and holds to
  ``SAM2ImagePredictor`` (and the video modules to sam2's tracker);
- sharded directories (``save_pretrained(max_shard_size=...)``) read as their one-file twins;
- bad directories are refused with what was expected and found, and nothing is written.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import SAM2_MODEL_TYPE, ServedTriton, start_triton
from tests.test_predictor_e2e import make_scene

HF_SEED = 21
TINY_VISION = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "global_attn_indexes": [1],
}
# transformers' configuration of conftest's SAM 2 type (sam2.1-tiny-test: a five-block Hiera of
# width 16, one memory attention layer, one fuser layer); everything else is SAM 2.1's default.
SAM2_TINY_VISION: dict[str, Any] = {
    "model_type": "sam2_vision_model",
    "backbone_config": {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 16,
        "num_attention_heads": 1,
        "blocks_per_stage": [1, 1, 2, 1],
        "global_attention_blocks": [3],
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
    },
    "backbone_channel_list": [128, 64, 32, 16],
}
SAM2_TINY: dict[str, Any] = {
    "vision_config": SAM2_TINY_VISION,
    "memory_attention_num_layers": 1,
    "memory_fuser_num_layers": 1,
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


Predict = Callable[[dict[str, Any], bool], tuple[torch.Tensor, torch.Tensor]]


def compare_prompts(
    predict: Predict,
    reference: Any,
    embeddings: Any,
    two: torch.Tensor,
    box: torch.Tensor,
    *,
    labels: torch.dtype,
    min_span: float,
    tolerance: float,
) -> None:
    """Every prompt kind through the reference package's predictor (``predict``: its prompt and
    multimask -> scores and low-res logits) and transformers' model (``reference`` on its image
    ``embeddings``), ``two`` points and a ``box`` in the model's 1024 frame: logits within
    ``tolerance`` of their span (at least ``min_span``: masks, not a constant), scores within
    ``tolerance``."""
    fg, bg = torch.ones(1, 1, dtype=labels), torch.zeros(1, 1, dtype=labels)
    fg_bg = torch.tensor([[1, 0]], dtype=labels)
    # (name, multimask, transformers' prompt, the reference predictor's prompt)
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
            {"input_points": two[None, :, None], "input_labels": torch.ones(1, 2, 1, dtype=labels)},
            {"point_coords": two[:, None], "point_labels": torch.ones(2, 1, dtype=labels)},
        ),
    ]
    # A low-res mask fed back in (mask_input refinement) with the same point.
    _, first = predict({**cases[0][3]}, False)
    cases.append(
        (
            "point + mask_input",
            False,
            {**cases[0][2], "input_masks": first},
            {**cases[0][3], "mask_input": first},
        )
    )
    for name, multimask, hf_prompt, prompt in cases:
        scores, logits = predict(prompt, multimask)
        out = reference(image_embeddings=embeddings, multimask_output=multimask, **hf_prompt)
        span = float(logits.max() - logits.min())
        assert span > min_span, (name, span)
        torch.testing.assert_close(out.pred_masks[0], logits, rtol=0, atol=tolerance * span, msg=name)
        torch.testing.assert_close(out.iou_scores[0], scores, rtol=0, atol=tolerance, msg=name)


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
    with torch.no_grad():
        compare_prompts(
            lambda prompt, multimask: predictor.predict_torch(**prompt, multimask_output=multimask)[1:],
            reference,
            hf_embedding,
            two,
            box,
            labels=torch.float32,
            min_span=1.0,
            tolerance=1e-4,
        )


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


# ----------------------------------------------------------------------------- SAM 2.1


def _hf_sam2_holding(official: dict[str, torch.Tensor]) -> Any:
    """transformers' Sam2VideoModel holding ``official`` (sam2's state dict). Which sam2 tensor
    each of its tensors is comes from the exporter's own conversion of a probe (tensor i filled
    with i), so no second name map is written here: transformers' outputs below are the proof."""
    from sam_triton_export.hf_sam2 import convert_state_dict
    from sam_triton_export.model_types import SAM2_MODEL_TYPES
    from transformers import Sam2VideoConfig, Sam2VideoModel

    model = Sam2VideoModel(Sam2VideoConfig(**SAM2_TINY)).eval()
    names = list(model.state_dict())
    probe = {k: torch.full(v.shape, float(i)) for i, (k, v) in enumerate(model.state_dict().items())}
    # the two copies of the Fourier matrix are one tensor to sam2
    probe["prompt_encoder.shared_embedding.positional_embedding"] = probe[
        "shared_image_embedding.positional_embedding"
    ]
    target = {k: v.shape for k, v in official.items()}
    converted = convert_state_dict(probe, target, SAM2_MODEL_TYPES[SAM2_MODEL_TYPE], "probe")
    sources: dict[float, list[str]] = {}
    for name, tensor in converted.items():
        sources.setdefault(float(tensor.flatten()[0]), []).append(name)
    weights = {}
    for key in names:
        found = sources[float(probe[key].flatten()[0])]  # several: the [4, C] point table's rows
        weights[key] = torch.cat([official[n] for n in found]) if len(found) > 1 else official[found[0]]
    model.load_state_dict(weights, strict=True)
    return model


@pytest.fixture(scope="module")
def hf_sam2_directory(tmp_path_factory: pytest.TempPathFactory, sam2_checkpoint: Path) -> Path:
    """A Sam2VideoModel directory of the session's seeded official SAM 2.1 checkpoint."""
    official = torch.load(sam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    directory = tmp_path_factory.mktemp("hf2") / "sam2.1-tiny-hf"
    _hf_sam2_holding(official).save_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    return directory


def test_a_sam2_directory_converts_to_the_official_checkpoint(
    hf_sam2_directory: Path, sam2_checkpoint: Path
) -> None:
    from sam_triton_export.family_sam2 import build_sam2_model
    from sam_triton_export.hf_checkpoints import read_model_type

    assert read_model_type(hf_sam2_directory).name == SAM2_MODEL_TYPE  # from config.json
    official = torch.load(sam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    state = build_sam2_model(SAM2_MODEL_TYPE, hf_sam2_directory).state_dict()
    assert set(state) == set(official)
    assert [k for k in official if not torch.equal(state[k], official[k])] == []


def test_sam2_conversion_matches_transformers(hf_sam2_directory: Path) -> None:
    """transformers' Sam2Model (image) and Sam2VideoModel (the video modules), each loaded from
    the directory by transformers, against sam2's converted model. Measured: embeddings equal,
    logits within ~3e-7, scores within 6e-8: the two use the same epsilons, no residual."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from sam_triton_export.family_sam2 import build_sam2_model
    from transformers import Sam2Model, Sam2VideoModel

    predictor = SAM2ImagePredictor(build_sam2_model(SAM2_MODEL_TYPE, hf_sam2_directory))
    reference = Sam2Model.from_pretrained(hf_sam2_directory).eval()
    h, w = 530, 410
    image = make_scene(h, w, seed=HF_SEED)
    with torch.no_grad():
        predictor.set_image(image)
        # The same preprocessed input for both: SAM2Transforms' 1024 square, normalised.
        hf_features = reference.get_image_embeddings(predictor._transforms(image)[None])
    ours = [*predictor._features["high_res_feats"], predictor._features["image_embed"]]
    for theirs, mine in zip(hf_features, ours, strict=True):
        scale = float(mine.abs().max())
        assert scale > 0.1
        torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5 * scale)

    frame = torch.tensor([1024 / w, 1024 / h])  # SAM 2 resizes to a square
    two = torch.tensor([[0.3 * w, 0.4 * h], [0.7 * w, 0.6 * h]]) * frame
    box = (torch.tensor([[0.2 * w, 0.25 * h], [0.75 * w, 0.8 * h]]) * frame).reshape(1, 4)
    with torch.no_grad():
        compare_prompts(
            lambda prompt, multimask: predictor._predict(
                **prompt, multimask_output=multimask, return_logits=True
            )[1:],
            reference,
            hf_features,
            two,
            box,
            labels=torch.int32,
            min_span=0.25,
            tolerance=1e-5,
        )

    # The video weights: the same inputs through transformers' modules and sam2's (the model
    # holds its tracker's modules too; the CLI export below builds sam2's video predictor).
    tracker = predictor.model
    video = Sam2VideoModel.from_pretrained(hf_sam2_directory).eval()
    g = torch.Generator().manual_seed(HF_SEED)
    features, mask = torch.randn(1, 256, 64, 64, generator=g), torch.rand(1, 1, 1024, 1024, generator=g)
    tokens, memory = torch.randn(2, 4096, 1, 256, generator=g), torch.randn(2, 4096 + 4, 1, 64, generator=g)
    pointer = torch.randn(3, 256, generator=g)
    with torch.no_grad():
        pairs = {
            "memory encoder": (
                tracker.memory_encoder(features, mask, skip_mask_sigmoid=True)["vision_features"],
                video.memory_encoder(features, mask)[0],
            ),
            "memory attention (4 object pointers)": (
                tracker.memory_attention(
                    curr=tokens[0],
                    curr_pos=tokens[1],
                    memory=memory[0],
                    memory_pos=memory[1],
                    num_obj_ptr_tokens=4,
                ),
                video.memory_attention(
                    current_vision_features=tokens[0],
                    memory=memory[0],
                    current_vision_position_embeddings=tokens[1],
                    memory_posision_embeddings=memory[1],
                    num_object_pointer_tokens=4,
                ).reshape(4096, 1, 256),
            ),
            "object pointer projection": (tracker.obj_ptr_proj(pointer), video.object_pointer_proj(pointer)),
            "pointer time projection": (
                tracker.obj_ptr_tpos_proj(pointer),
                video.temporal_positional_encoding_projection_layer(pointer),
            ),
            "mask for memory": (tracker.mask_downsample(mask), video.mask_downsample(mask)),
        }
    for name, (mine, theirs) in pairs.items():
        torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5 * float(mine.abs().max()), msg=name)
    for ours_name, theirs_name in [
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ]:
        assert torch.equal(getattr(tracker, ours_name), getattr(video, theirs_name)), ours_name


def test_the_sam2_directory_exports_the_served_checkpoints_graphs(
    hf_sam2_directory: Path, sam2_export: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI export of the directory (its type from config.json) writes byte for byte the
    graphs of the official checkpoint's export, which test_sam2 serves and holds to
    SAM2ImagePredictor and the video modules hold to sam2's tracker: the served model is the
    reference's, with no second server here."""
    from sam_triton.cli import build_parser
    from sam_triton_common.contract import read_export_info

    repository = tmp_path / "model_repository"
    argv = ["export", "--checkpoint", str(hf_sam2_directory), "--repository", str(repository), "--no-verify"]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    info, official = read_export_info(repository), read_export_info(sam2_export.repository)
    assert info is not None and official is not None
    assert info["model_type"] == SAM2_MODEL_TYPE and info["options"]["family"] == "sam2"
    assert info["weights"]["checkpoint"] == str(hf_sam2_directory.resolve())
    assert info["files"] == official["files"]  # every graph and the tracker's settings
    assert any(name.startswith("sam_video/") for name in info["files"])
    args = build_parser().parse_args([*argv, "--if-changed"])
    assert args.handler(args) == 0
    assert "already holds this export (sam2.1-tiny-test" in capsys.readouterr().out


# ----------------------------------------------------------------------------- sharded


def test_sharded_directories_read_like_one_file(
    hf_directory: Path, hf_sam2_directory: Path, tmp_path: Path
) -> None:
    from sam_triton_export.family_sam2 import build_sam2_model
    from sam_triton_export.hf_checkpoints import directory_sha256, read_model_type
    from sam_triton_export.model_builder import build_sam
    from transformers import Sam2VideoModel, SamModel

    for name, model_class, source, build in [
        ("sam", SamModel, hf_directory, lambda d: build_sam("tiny-test", d)),
        ("sam2", Sam2VideoModel, hf_sam2_directory, lambda d: build_sam2_model(SAM2_MODEL_TYPE, d)),
    ]:
        sharded = tmp_path / name
        model_class.from_pretrained(source).save_pretrained(sharded, max_shard_size="2MB")
        shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
        assert len(shards) >= 3 and (sharded / "model.safetensors.index.json").is_file(), shards
        assert not (sharded / "model.safetensors").exists()
        assert read_model_type(sharded) == read_model_type(source)
        whole, parts = build(source).state_dict(), build(sharded).state_dict()
        assert [k for k in whole if not torch.equal(whole[k], parts[k])] == [], name
        digest = directory_sha256(sharded)  # export.json's: every shard counts
        (sharded / shards[-1]).write_bytes((sharded / shards[-1]).read_bytes() + b" ")
        assert directory_sha256(sharded) != digest


# ----------------------------------------------------------------------------- bad input


@dataclass(frozen=True)
class Sources:
    sam: Path  # hf_directory
    sam2: Path  # hf_sam2_directory


@pytest.fixture(scope="module")
def sources(hf_directory: Path, hf_sam2_directory: Path) -> Sources:
    return Sources(hf_directory, hf_sam2_directory)


def _edited(
    source: Path,
    path: Path,
    config: Callable[[dict[str, Any]], None] | None = None,
    state: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> None:
    """A copy of the directory ``source`` with its config.json and/or weights edited."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, path)
    if config is not None:
        content = json.loads((path / "config.json").read_text())
        config(content)
        (path / "config.json").write_text(json.dumps(content))
    if state is not None:
        weights = load_file(str(path / "model.safetensors"))
        state(weights)
        save_file(weights, str(path / "model.safetensors"))


def _clip_directory(path: Path, sources: Sources) -> None:
    from transformers import CLIPConfig

    CLIPConfig(architectures=["CLIPModel"]).save_pretrained(path)  # as openai/clip-vit-base-patch32
    shutil.copy(sources.sam / "model.safetensors", path)


def _sam2_image_only(path: Path, sources: Sources) -> None:
    from transformers import Sam2Config, Sam2Model

    Sam2Model(Sam2Config(vision_config=SAM2_TINY_VISION)).save_pretrained(
        path
    )  # transformers writes the image model only


def _no_weights(path: Path, sources: Sources) -> None:
    path.mkdir()
    shutil.copy(sources.sam / "config.json", path)
    (path / "pytorch_model.bin").write_bytes(b"")


def _a_shard_missing(path: Path, sources: Sources) -> None:
    from transformers import SamModel

    SamModel.from_pretrained(sources.sam).save_pretrained(path, max_shard_size="2MB")
    sorted(path.glob("model-*.safetensors"))[1].unlink()


def _cut(key: str, rows: int) -> Callable[[dict[str, torch.Tensor]], None]:
    def cut(state: dict[str, torch.Tensor]) -> None:
        state[key] = state[key][:rows].contiguous()

    return cut


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def set_(config: dict[str, Any]) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            config = config.setdefault(parent, {})
        config[name] = value

    return set_


SAM2_QKV = "vision_encoder.backbone.blocks.0.attn.qkv.weight"
SAM2_FFN = "memory_attention.layers.0.linear1.weight"
BAD: dict[str, tuple[Callable[[Path, Sources], None], list[str]]] = {
    "clip": (
        _clip_directory,
        [
            "holds a model_type 'clip' (CLIPModel)",
            "expected model_type 'sam' (SamModel",
            "or 'sam2' or 'sam2_video'",
        ],
    ),
    "no safetensors": (
        _no_weights,
        ["has no model.safetensors or model.safetensors.index.json (found: config.json, pytorch_model.bin)"],
    ),
    "a shard missing": (
        _a_shard_missing,
        ["model.safetensors.index.json lists shards that are not files beside it: model-00002-of-"],
    ),
    "wrong shape": (
        lambda p, s: _edited(s.sam, p, state=_cut("vision_encoder.layers.0.attn.qkv.weight", 96)),
        ["tensor vision_encoder.layers.0.attn.qkv.weight has shape [96, 64], tiny-test expects [192, 64]"],
    ),
    "another activation": (
        lambda p, s: _edited(s.sam, p, config=_set("mask_decoder_config.hidden_act", "gelu")),
        ["mask_decoder_config.hidden_act is 'gelu'", "has 'relu'"],
    ),
    "sam2 image model only": (
        _sam2_image_only,
        [
            "holds a transformers Sam2Model with the image model's weights only (225 tensors)",
            "Sam2VideoModel",
        ],
    ),
    "sam2 wrong shape": (
        lambda p, s: _edited(s.sam2, p, state=_cut(SAM2_QKV, 24)),
        [f"tensor {SAM2_QKV} has shape [24, 16], sam2.1-tiny-test expects [48, 16]"],
    ),
    "sam2 a tensor missing": (
        lambda p, s: _edited(s.sam2, p, state=lambda state: state.__delitem__(SAM2_FFN)),
        [
            "does not fit sam2.1-tiny-test",
            "1 tensors missing (e.g. memory_attention.layers.0.linear1.weight)",
        ],
    ),
    "sam2 a tensor too many": (
        lambda p, s: _edited(s.sam2, p, state=lambda state: state.update(extra=torch.zeros(1))),
        ["unexpected tensor extra"],
    ),
    "sam2 other global attention": (
        lambda p, s: _edited(
            s.sam2, p, config=_set("vision_config.backbone_config.global_attention_blocks", [2])
        ),
        ["vision_config.backbone_config.global_attention_blocks is [2], sam2.1-tiny-test has [3]"],
    ),
    "sam2 unknown size": (
        lambda p, s: _edited(
            s.sam2, p, config=_set("vision_config.backbone_config.blocks_per_stage", [1, 2, 2, 1])
        ),
        ["a SAM 2.1 Hiera of hidden_size 16 and 6 blocks", "is none of the SAM 2.1 types"],
    ),
    "sam2 Fourier copies differ": (
        lambda p, s: _edited(
            s.sam2,
            p,
            state=lambda state: state.update(
                {
                    "shared_image_embedding.positional_embedding": -state[
                        "shared_image_embedding.positional_embedding"
                    ]
                }
            ),
        ),
        ["differ (sam2 has one matrix for both)"],
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_directory_is_refused_and_nothing_is_written(
    kind: str, sources: Sources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import build_parser

    make, expected = BAD[kind]
    directory = tmp_path / "bad"
    make(directory, sources)
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
