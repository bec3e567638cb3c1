"""Hugging Face SAM 2 / 2.1 checkpoints: a ``transformers`` ``Sam2VideoModel`` directory (as
``facebook/sam2.1-hiera-tiny`` ... ``-large`` are published: ``model_type`` ``sam2_video``) or a
``Sam2Model`` one (``sam2``) read as the state dict of ``sam2``'s own ``SAM2Base``.

The Hiera size comes from ``config.json`` (the backbone's width and depth; SAM 2.0 or 2.1 from
the video switches, or from the weights of a ``Sam2Model`` directory); every other setting that
changes what the model computes without changing a tensor's shape (heads, windows, global
blocks, pooling, the decoder's multimask fallback, the tracker's memory settings) is compared
with the ``sam2`` model of that type, and every tensor is renamed, shape-checked and accounted
for: nothing in the directory is ignored and nothing the model needs is left at its initial
value. A directory must hold the video weights (memory attention, memory encoder, object
pointers) because a served SAM 2 model tracks video too (``sam_video``); transformers'
``Sam2Model.save_pretrained`` writes only the image model's, and such a directory is refused
with what to use instead. Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sam_triton_export.checkpoints import CheckpointError
from sam_triton_export.model_types import SAM2_MODEL_TYPES, Sam2ModelType

if TYPE_CHECKING:
    from pathlib import Path

    import torch

SAM2_IMAGE = "sam2"  # config.json's model_type of transformers' Sam2Model
SAM2_VIDEO = "sam2_video"  # ... of Sam2VideoModel (what the facebook/sam2.1-hiera-* folders hold)
SAM2_HF_MODEL_TYPES = (SAM2_IMAGE, SAM2_VIDEO)

# transformers keeps the random Fourier matrix twice (prompt points and the image-wide
# positional encoding); sam2 has it once. Both copies must agree.
_FOURIER = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
_POINT_EMBED = "prompt_encoder.point_embed.weight"  # one [4, C] table; sam2 has four [1, C]
# Tensors only a model that tracks video has (transformers' Sam2Model leaves them out).
_VIDEO = re.compile(
    r"^(memory_|mask_downsample\.|object_pointer_proj\.|temporal_positional_encoding_projection_layer\.|"
    r"no_memory_positional_encoding$|no_object_pointer$|occlusion_spatial_embedding_parameter$)"
)
_SAM21_ONLY = "occlusion_spatial_embedding_parameter"  # sam2's no_obj_embed_spatial

# transformers' names -> sam2's, applied in order to each key (then _layer_names renumbers).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^image_encoder\.trunk\.patch_embed\.projection\.", "image_encoder.trunk.patch_embed.proj."),
    (r"^image_encoder\.trunk\.blocks\.(\d+)\.layer_norm(\d)\.", r"image_encoder.trunk.blocks.\1.norm\2."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^sam_prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^sam_prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^sam_prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^sam_prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^sam_prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^sam_mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^sam_mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^sam_mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (
        r"^sam_mask_decoder\.transformer\.layer_norm_final_attn\.",
        "sam_mask_decoder.transformer.norm_final_attn.",
    ),
    (
        r"^(sam_mask_decoder\.transformer|memory_attention)\.layers\.(\d+)\.layer_norm(\d)\.",
        r"\1.layers.\2.norm\3.",
    ),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"\.o_proj\.", ".out_proj."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.depthwise_conv\.", r"\1.dwconv."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.pointwise_conv(\d)\.", r"\1.pwconv\2."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.layer_norm\.", r"\1.norm."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
)
# transformers' feed-forward heads are proj_in, layers[0..depth-3], proj_out; sam2's MLP is one
# list, layers[0..depth-1] (a two-layer MLP has no middle layers).
_MLP = re.compile(
    r"^(.*(?:\.mlp|iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head|^obj_ptr_proj))"
    r"\.(proj_in|layers\.(\d+)|proj_out)\."
)
# MaskDownSampler: transformers' layers[i].conv / .layer_norm and final_conv; sam2's one
# Sequential of (conv, LayerNorm2d, GELU) per layer, then the final 1x1 conv.
_DOWNSAMPLER = re.compile(
    r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\."
)


def _mlp_depths(keys: Iterable[str]) -> dict[str, int]:
    middle: dict[str, set[int]] = {}
    for key in keys:
        if (match := _MLP.match(key)) is not None:
            layers = middle.setdefault(match.group(1), set())
            if match.group(3) is not None:
                layers.add(int(match.group(3)))
    return {head: 2 + len(layers) for head, layers in middle.items()}


def _downsampler_layers(keys: Iterable[str]) -> int:
    found = {int(m.group(1)) for k in keys if (m := _DOWNSAMPLER.match(k)) and m.group(1) is not None}
    return len(found)


def _renamed(key: str) -> str:
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _layer_names(key: str, mlp_depth: dict[str, int], downsampler_layers: int) -> str:
    """sam2's name of a renamed key: its MLP and mask downsampler layers renumbered
    (``mlp_depth`` per MLP head, ``downsampler_layers`` in the mask downsampler, both counted
    over the whole key set)."""
    if (match := _DOWNSAMPLER.match(key)) is not None:
        layer, part = match.groups()
        position = 3 * downsampler_layers if layer is None else 3 * int(layer) + (part == "layer_norm")
        return f"memory_encoder.mask_downsampler.encoder.{position}.{key[match.end() :]}"
    if (match := _MLP.match(key)) is not None:
        head, part, index = match.groups()
        depth = mlp_depth[head]
        position = 0 if part == "proj_in" else depth - 1 if part == "proj_out" else int(index) + 1
        return f"{head}.layers.{position}.{key[match.end() :]}"
    return key


def has_video_weights(names: Iterable[str]) -> bool:
    return any(_VIDEO.match(name) for name in names)


# ----------------------------------------------------------------------------- the type


def hf_config(directory: Path, model_type: str) -> Any:
    """transformers' own reading of ``config.json`` (its defaults filled in)."""
    from transformers import Sam2Config, Sam2VideoConfig

    config_class = Sam2VideoConfig if model_type == SAM2_VIDEO else Sam2Config
    try:
        return config_class.from_pretrained(directory)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise CheckpointError(
            f"{directory}/config.json is not a valid {config_class.__name__} configuration: "
            f"{type(e).__name__}: {e}"
        ) from e


def _version(directory: Path, model_type: str, config: Any, names: set[str]) -> str:
    if model_type == SAM2_VIDEO:
        switches = {
            "enable_occlusion_spatial_embedding": bool(config.enable_occlusion_spatial_embedding),
            "enable_temporal_pos_encoding_for_object_pointers": bool(
                config.enable_temporal_pos_encoding_for_object_pointers
            ),
        }
        if len(set(switches.values())) != 1:
            raise CheckpointError(
                f"{directory}/config.json sets {switches}: SAM 2.1 has both on, SAM 2.0 both off"
            )
        return "2.1" if all(switches.values()) else "2.0"
    if not has_video_weights(names):
        raise CheckpointError(
            f"{directory} holds a transformers Sam2Model with the image model's weights only "
            f"({len(names)} tensors): a served SAM 2 model also tracks video (sam_video), whose memory "
            "attention, memory encoder and object pointer weights are not in it. Use the Sam2VideoModel "
            "directory the weights came from (facebook/sam2.1-hiera-tiny/-small/-base-plus/-large hold "
            "both), or the official sam2 .pt checkpoint"
        )
    return "2.1" if _SAM21_ONLY in names else "2.0"


def read_sam2_type(directory: Path, model_type: str, names: set[str]) -> Sam2ModelType:
    """The SAM 2 model type of a transformers directory: the Hiera width and depth from
    ``config.json``, the version from its switches (or a ``Sam2Model``'s weights, ``names``)."""
    config = hf_config(directory, model_type)
    backbone = config.vision_config.backbone_config
    width, depth = int(backbone.hidden_size), sum(int(n) for n in backbone.blocks_per_stage)
    version = _version(directory, model_type, config, names)
    for spec in SAM2_MODEL_TYPES.values():
        if (spec.trunk_width, spec.trunk_depth, spec.version) == (width, depth, version):
            return spec
    known = ", ".join(
        f"{t.name} ({t.trunk_width}/{t.trunk_depth})"
        for t in SAM2_MODEL_TYPES.values()
        if t.version == version
    )
    raise CheckpointError(
        f"{directory}/config.json: a SAM {version} Hiera of hidden_size {width} and {depth} blocks "
        f"(blocks_per_stage {list(backbone.blocks_per_stage)}) is none of the SAM {version} types: "
        f"width/depth {known}"
    )


def _stages(trunk: Any) -> list[int]:
    ends = [-1, *trunk.stage_ends]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _facts(model: Any, video: bool) -> dict[str, Any]:
    """config.json's settings that no tensor shape reveals (their paths) -> sam2's values."""
    trunk, neck = model.image_encoder.trunk, model.image_encoder.neck
    pe, md = model.sam_prompt_encoder, model.sam_mask_decoder
    block = trunk.blocks[0]
    backbone = {
        # (its num_attention_heads is not read by transformers: the stages' heads are)
        "num_attention_heads_per_stage": [trunk.blocks[e].attn.num_heads for e in trunk.stage_ends],
        "blocks_per_stage": _stages(trunk),
        "embed_dim_per_stage": [trunk.blocks[e].dim_out for e in trunk.stage_ends],
        "global_attention_blocks": list(trunk.global_att_blocks),
        "window_size_per_stage": list(trunk.window_spec),
        "window_positional_embedding_background_size": list(trunk.window_pos_embed_bkg_spatial_size),
        "query_stride": list(trunk.q_stride),
        "num_query_pool_stages": len(trunk.q_pool_blocks),
        "patch_kernel_size": list(trunk.patch_embed.proj.kernel_size),
        "patch_stride": list(trunk.patch_embed.proj.stride),
        "patch_padding": list(trunk.patch_embed.proj.padding),
        "image_size": [model.image_size, model.image_size],
        "hidden_act": "gelu",
        "layer_norm_eps": block.norm1.eps,
    }
    vision = {
        "backbone_channel_list": list(neck.backbone_channel_list),
        "fpn_top_down_levels": list(neck.fpn_top_down_levels),
        "fpn_hidden_size": neck.d_model,
        "fpn_kernel_size": neck.convs[0].conv.kernel_size[0],
        "fpn_stride": neck.convs[0].conv.stride[0],
        "fpn_padding": neck.convs[0].conv.padding[0],
        "num_feature_levels": len(neck.backbone_channel_list) - model.image_encoder.scalp,
        "backbone_feature_sizes": [
            [model.image_size // (4 << i)] * 2 for i in range(len(neck.backbone_channel_list) - 1)
        ],
    }
    prompt = {
        "hidden_size": pe.embed_dim,
        "image_size": pe.input_image_size[0],
        "patch_size": pe.input_image_size[0] // pe.image_embedding_size[0],
        "num_point_embeddings": pe.num_point_embeddings,
        "hidden_act": "gelu",
    }
    decoder = {
        "num_hidden_layers": len(md.transformer.layers),
        "num_attention_heads": md.transformer.layers[0].self_attn.num_heads,
        "num_multimask_outputs": md.num_multimask_outputs,
        "dynamic_multimask_via_stability": md.dynamic_multimask_via_stability,
        "dynamic_multimask_stability_delta": md.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": md.dynamic_multimask_stability_thresh,
        "hidden_act": "gelu",
    }
    facts = {f"vision_config.backbone_config.{k}": v for k, v in backbone.items()}
    facts |= {f"vision_config.{k}": v for k, v in vision.items()}
    facts |= {f"prompt_encoder_config.{k}": v for k, v in prompt.items()}
    facts |= {f"mask_decoder_config.{k}": v for k, v in decoder.items()}
    if video:
        attention = model.memory_attention.layers[0]
        downsampler = model.memory_encoder.mask_downsampler.encoder
        fuser = model.memory_encoder.fuser.layers[0]
        facts |= {
            "num_maskmem": model.num_maskmem,
            "image_size": model.image_size,
            "sigmoid_scale_for_mem_enc": model.sigmoid_scale_for_mem_enc,
            "sigmoid_bias_for_mem_enc": model.sigmoid_bias_for_mem_enc,
            "multimask_output_in_sam": model.multimask_output_in_sam,
            "multimask_min_pt_num": model.multimask_min_pt_num,
            "multimask_max_pt_num": model.multimask_max_pt_num,
            "multimask_output_for_tracking": model.multimask_output_for_tracking,
            "max_object_pointers_in_encoder": model.max_obj_ptrs_in_encoder,
            "max_cond_frame_num": model.max_cond_frames_in_attn,
            "memory_attention_num_attention_heads": attention.self_attn.num_heads,
            "memory_attention_feed_forward_hidden_act": "relu",
            "memory_attention_rope_feat_sizes": [model.image_size // 16] * 2,
            "mask_downsampler_kernel_size": downsampler[0].kernel_size[0],
            "mask_downsampler_stride": downsampler[0].stride[0],
            "mask_downsampler_padding": downsampler[0].padding[0],
            "mask_downsampler_hidden_act": "gelu",
            "memory_fuser_kernel_size": fuser.dwconv.kernel_size[0],
            "memory_fuser_padding": fuser.dwconv.padding[0],
            "memory_fuser_hidden_act": "gelu",
        }
    return facts


def _lookup(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return list(config) if isinstance(config, tuple) else config


def check_settings(directory: Path, model_type: str, model: Any, spec: Sam2ModelType) -> None:
    """CheckpointError naming each setting of ``config.json`` that differs from ``model``'s
    (``sam2``'s ``spec``): transformers would compute something else than the served model."""
    config = hf_config(directory, model_type)
    wrong = [
        f"{path} is {found!r}, {spec.name} has {expected!r}"
        for path, expected in _facts(model, video=model_type == SAM2_VIDEO).items()
        if (found := _lookup(config, path)) != expected
        and not (
            isinstance(expected, float) and abs(float(found) - expected) <= 1e-12 * max(1.0, abs(expected))
        )
    ]
    if wrong:
        raise CheckpointError(
            f"{directory}/config.json does not describe sam2's {spec.name}: " + "; ".join(wrong)
        )


# ----------------------------------------------------------------------------- the weights


def convert_state_dict(
    hf_state: dict[str, torch.Tensor], target: dict[str, torch.Size], spec: Sam2ModelType, source: str
) -> dict[str, torch.Tensor]:
    """``hf_state`` (transformers' names) as sam2's state dict ``target`` (names -> shapes of
    ``spec``'s model): every tensor renamed and shape-checked, none left over, none missing."""
    import torch

    problems: list[str] = []
    hf_state = dict(hf_state)
    fourier = [hf_state.pop(k) for k in _FOURIER if k in hf_state]
    if len(fourier) == 2 and not torch.equal(fourier[0], fourier[1]):
        problems.append(f"{_FOURIER[0]} and {_FOURIER[1]} differ (sam2 has one matrix for both)")
    if fourier:
        hf_state["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = fourier[0]
    points = hf_state.pop(_POINT_EMBED, None)
    if points is not None:
        for i, row in enumerate(points):
            hf_state[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row[None]
    renamed = {key: _renamed(key) for key in hf_state}
    depths, layers = _mlp_depths(renamed.values()), _downsampler_layers(renamed.values())
    state: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        name = _layer_names(renamed[key], depths, layers)
        if name not in target:
            problems.append(f"unexpected tensor {key}")
        elif tuple(tensor.shape) != tuple(target[name]):
            problems.append(
                f"tensor {key} has shape {list(tensor.shape)}, {spec.name} expects {list(target[name])}"
            )
        elif name in state:
            problems.append(f"tensor {key} is a second {name}")
        else:
            state[name] = tensor.to(torch.float32)
    missing = [k for k in target if k not in state]
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{source} does not fit {spec.describe()}: " + "; ".join(problems[:3]) + more)
    return state


def load_sam2_state_dict(
    directory: Path, model_type: str, hf_state: dict[str, torch.Tensor], model: Any, spec: Sam2ModelType
) -> dict[str, torch.Tensor]:
    """sam2's state dict for ``model`` (a ``spec`` SAM2Base, image or video predictor) from a
    transformers directory's ``config.json`` (``model_type``) and weights ``hf_state``, every
    setting and tensor checked."""
    check_settings(directory, model_type, model, spec)
    target = {k: v.shape for k, v in model.state_dict().items()}
    return convert_state_dict(hf_state, target, spec, str(directory))
