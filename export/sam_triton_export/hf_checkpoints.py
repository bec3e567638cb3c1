"""Hugging Face checkpoints: a ``transformers`` model directory (``config.json`` +
``model.safetensors``, or ``model.safetensors.index.json`` and the shards it lists, as
``save_pretrained`` writes them and as ``facebook/sam-vit-base``, ``-large`` and ``-huge`` are
published) read as the state dict of segment_anything's own ``Sam``; SAM 2 directories are
:mod:`sam_triton_export.hf_sam2`'s.

The model type comes from the directory's ``config.json`` (the vision encoder's width, depth,
heads and global-attention blocks), never from a flag; the weights are renamed to
segment_anything's modules and checked tensor by tensor against the ``Sam`` of that type, so the
rest of the exporter treats them exactly as an official ``.pth`` file. Nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam_triton_export.checkpoints import CheckpointError, sha256_file
from sam_triton_export.hf_sam2 import SAM2_HF_MODEL_TYPES, load_sam2_state_dict, read_sam2_type
from sam_triton_export.model_types import MODEL_TYPES, AnyModelType, ModelType, Sam2ModelType

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # save_pretrained(max_shard_size=...): the shards' map
SAM_MODEL_TYPE = "sam"  # config.json's "model_type" of a transformers SamModel

_TIED_COPY = "prompt_encoder.shared_embedding.positional_embedding"
_FOURIER = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# transformers' names -> segment_anything's, applied in order to each key (full-match anchors
# where a short name would also match elsewhere). The MLP heads are handled by _rename_mlp.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.", "image_encoder."),
    (r"^image_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^image_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"^image_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^image_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^image_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^image_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    # transformers keeps the random Fourier matrix twice (tied); segment_anything once.
    (r"^shared_image_embedding\.positional_embedding$", _FOURIER),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.",
        r"mask_decoder.transformer.layers.\1.norm\2.",
    ),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
)
# transformers' SamFeedForward is proj_in, layers[0..depth-3], proj_out; segment_anything's MLP
# is one list, layers[0..depth-1].
_MLP = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.(proj_in|layers\.(\d+)|proj_out)\."
)


class HuggingFaceConfig:
    """What ``config.json`` says, with transformers' defaults where the file leaves them out
    (``save_pretrained`` writes only the values that differ from them)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        path = directory / CONFIG_FILE
        try:
            self.raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from e
        if not isinstance(self.raw, dict):
            raise CheckpointError(f"{path} is not a JSON object")
        self.model_type = str(self.raw.get("model_type", ""))
        self.architectures = [str(a) for a in self.raw.get("architectures") or []]

    def describe(self) -> str:
        arch = f" ({', '.join(self.architectures)})" if self.architectures else ""
        return f"model_type {self.model_type!r}{arch}"

    def section(self, name: str) -> dict[str, Any]:
        """Sub-config ``name`` (``vision_config`` ...), completed with transformers' defaults."""
        from transformers import SamConfig

        defaults: dict[str, Any] = getattr(SamConfig(), name).to_dict()
        return {**defaults, **(self.raw.get(name) or {})}


# SamModel settings that segment_anything's Sam fixes and that no tensor's shape reveals.
_FIXED: dict[str, dict[str, Any]] = {
    "vision_config": {
        "hidden_act": "gelu",
        "use_abs_pos": True,
        "use_rel_pos": True,
        "image_size": 1024,
        "patch_size": 16,
    },
    "prompt_encoder_config": {"hidden_act": "gelu", "image_size": 1024, "patch_size": 16},
    "mask_decoder_config": {"hidden_act": "relu", "num_multimask_outputs": 3},
}


def is_hf_directory(path: Path | str) -> bool:
    """True when ``path`` is a folder with a ``config.json`` (a transformers model directory)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _sam1_type(config: HuggingFaceConfig) -> ModelType:
    for section, fixed in _FIXED.items():
        values = config.section(section)
        for key, value in fixed.items():
            if values.get(key) != value:
                raise CheckpointError(
                    f"{config.directory / CONFIG_FILE}: {section}.{key} is {values.get(key)!r}; "
                    f"segment_anything's SAM has {value!r}"
                )
    vision = config.section("vision_config")
    found = (
        int(vision["hidden_size"]),
        int(vision["num_hidden_layers"]),
        int(vision["num_attention_heads"]),
        tuple(int(i) for i in vision["global_attn_indexes"]),
    )
    for spec in MODEL_TYPES.values():
        if (
            spec.encoder_embed_dim,
            spec.encoder_depth,
            spec.encoder_num_heads,
            spec.encoder_global_attn_indexes,
        ) == found:
            return spec
    known = ", ".join(
        f"{t.name} ({t.encoder_embed_dim}/{t.encoder_depth}/{t.encoder_num_heads})"
        for t in MODEL_TYPES.values()
    )
    raise CheckpointError(
        f"{config.directory / CONFIG_FILE}: a SamModel whose vision encoder (hidden_size {found[0]}, "
        f"num_hidden_layers {found[1]}, num_attention_heads {found[2]}, global_attn_indexes "
        f"{list(found[3])}) is none of the SAM types: width/depth/heads {known}"
    )


def read_model_type(directory: Path | str) -> ModelType | Sam2ModelType:
    """The model type a transformers directory holds, from its ``config.json``; CheckpointError
    naming what was expected and found for anything else (another model, no weights)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"Hugging Face model directory not found: {directory}")
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{directory} is a folder without {CONFIG_FILE}: expected a transformers model directory "
            f"({CONFIG_FILE} + {WEIGHTS_FILE}) or a checkpoint file"
        )
    config = HuggingFaceConfig(directory)
    if config.model_type not in (SAM_MODEL_TYPE, *SAM2_HF_MODEL_TYPES):
        raise CheckpointError(
            f"{directory} holds a {config.describe()} model, not a Segment Anything one: expected "
            f"model_type {SAM_MODEL_TYPE!r} (SamModel, as facebook/sam-vit-base/-large/-huge) or "
            f"{' or '.join(map(repr, SAM2_HF_MODEL_TYPES))} (Sam2Model, Sam2VideoModel, as "
            "facebook/sam2.1-hiera-tiny/-small/-base-plus/-large)"
        )
    if config.model_type == SAM_MODEL_TYPE:
        spec = _sam1_type(config)
        safetensors_files(directory)
        return spec
    return read_sam2_type(directory, config.model_type, set(tensor_names(directory)))


def safetensors_files(directory: Path) -> list[Path]:
    """The directory's safetensors files: ``model.safetensors``, or the shards its index lists
    (each checked to exist); CheckpointError for neither."""
    index = directory / INDEX_FILE
    if index.is_file():
        return sorted({directory / name for name in _weight_map(index).values()})
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_FILE} or {INDEX_FILE} (found: {found}); save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    return [weights]


def _weight_map(index: Path) -> dict[str, str]:
    """The index's tensor name -> shard file, every shard checked to be a file beside it."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError("weight_map is not an object of file names")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot read {index}: {type(e).__name__}: {e}") from e
    shards = set(weight_map.values())
    bad = sorted(name for name in shards if Path(name).name != name or not (index.parent / name).is_file())
    if bad:
        raise CheckpointError(f"{index} lists shards that are not files beside it: {', '.join(bad)}")
    return {str(k): str(v) for k, v in weight_map.items()}


def tensor_names(directory: Path) -> list[str]:
    """The tensor names the directory's weights hold (safetensors headers only: nothing loaded)."""
    from safetensors import safe_open

    names: list[str] = []
    for path in safetensors_files(directory):
        try:
            with safe_open(str(path), framework="pt") as f:
                names.extend(f.keys())
        except Exception as e:  # safetensors' own error type besides OSError/ValueError
            raise CheckpointError(f"cannot read {path}: not a valid safetensors file: {e}") from e
    return names


def directory_sha256(directory: Path) -> str:
    """One digest of what decides the weights: ``config.json``, the index and every weights file."""
    digest = hashlib.sha256()
    index = [directory / INDEX_FILE] if (directory / INDEX_FILE).is_file() else []
    for path in [directory / CONFIG_FILE, *index, *safetensors_files(directory)]:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _rename_mlp(key: str, depth: int) -> str:
    match = _MLP.match(key)
    if match is None:
        return key
    head, part, index = match.groups()
    position = 0 if part == "proj_in" else depth - 1 if part == "proj_out" else int(index) + 1
    return f"{head}.layers.{position}.{key[match.end() :]}"


def sam_key(key: str, mlp_depth: dict[str, int]) -> str:
    """segment_anything's name of transformers' SamModel tensor ``key``."""
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    head = "iou_prediction_head" if ".iou_prediction_head." in key else "output_hypernetworks_mlps"
    return _rename_mlp(key, mlp_depth[head])


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory, from ``model.safetensors`` or from the shards of its index
    (each shard holding exactly the tensors the index gives it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = directory / INDEX_FILE
    weight_map = _weight_map(index) if index.is_file() else None
    state: dict[str, torch.Tensor] = {}
    for path in safetensors_files(directory):
        try:
            shard = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path}: not a valid safetensors file: {e}") from e
        if weight_map is not None:
            listed = {k for k, v in weight_map.items() if v == path.name}
            if set(shard) != listed:
                odd = sorted(set(shard) ^ listed)
                raise CheckpointError(
                    f"{path} does not hold the tensors {index.name} gives it "
                    f"({len(odd)} differ, e.g. {odd[0]})"
                )
        state.update(shard)
    return state


def check_directory(directory: Path | str, expected: AnyModelType) -> None:
    """CheckpointError unless ``directory`` is a transformers directory of an ``expected`` model
    with its weights (what :func:`read_model_type` checks, and the type)."""
    directory = Path(directory)
    found = read_model_type(directory)
    if found.name != expected.name:
        raise CheckpointError(
            f"{directory} holds a {found.describe()} (from its {CONFIG_FILE}), but {expected.describe()} "
            f"was requested; use --model-type {found.name} or leave --model-type out"
        )


def load_hf_sam2(directory: Path | str, model: Any, expected: Sam2ModelType) -> None:
    """Load the weights of the transformers SAM 2 model in ``directory`` into ``model``, sam2's
    ``SAM2Base`` of type ``expected`` (:mod:`sam_triton_export.hf_sam2` converts and checks them)."""
    directory = Path(directory)
    check_directory(directory, expected)
    model_type = HuggingFaceConfig(directory).model_type
    state = load_sam2_state_dict(directory, model_type, read_weights(directory), model, expected)
    model.load_state_dict(state, strict=True)


def load_sam_state_dict(directory: Path | str, expected: AnyModelType) -> dict[str, torch.Tensor]:
    """The weights of the transformers SamModel in ``directory`` as the state dict of
    segment_anything's ``Sam`` of type ``expected``, every tensor's name and shape checked."""
    import torch

    from sam_triton_export.model_builder import instantiate_sam

    directory = Path(directory)
    check_directory(directory, expected)
    config = HuggingFaceConfig(directory)
    decoder = {**{"iou_head_depth": 3}, **(config.raw.get("mask_decoder_config") or {})}
    # The hypernetwork MLPs are always 3 deep in SamMaskDecoder; the IoU head's depth is configured.
    mlp_depth = {"output_hypernetworks_mlps": 3, "iou_prediction_head": int(decoder["iou_head_depth"])}
    hf_state = read_weights(directory)
    target = {k: v.shape for k, v in instantiate_sam(expected).state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in hf_state.items():
        if key == _TIED_COPY:
            continue
        name = sam_key(key, mlp_depth)
        if name not in target:
            problems.append(f"unexpected tensor {key}")
        elif tuple(tensor.shape) != tuple(target[name]):
            problems.append(
                f"tensor {key} has shape {list(tensor.shape)}, {expected.name} expects {list(target[name])}"
            )
        else:
            state[name] = tensor.to(torch.float32)
    tied = hf_state.get(_TIED_COPY)
    if tied is not None:  # a file written without the tied copy removed: either copy will do
        state.setdefault(
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", tied.to(torch.float32)
        )
    missing = [k for k in target if k not in state]
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{directory} does not fit {expected.describe()}: " + "; ".join(problems[:3]) + more
        )
    return state
