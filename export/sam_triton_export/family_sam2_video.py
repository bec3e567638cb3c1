"""SAM 2 / 2.1 video tracking graphs (``sam_triton_common.video_contract``): build, export, verify.

Tracking runs three graphs per object and frame beside the image family's encoder:

- ``video_decoder``: ``SAM2Base._forward_sam_heads`` up to the choice among mask tokens: the
  prompt encoder and mask decoder on the (memory-conditioned) features, every token's logits,
  IoU and object pointer (``obj_ptr_proj``, mixed with ``no_obj_ptr`` by the object score).
- ``memory_attention``: ``SAM2Base._prepare_memory_conditioned_features`` after its choice of
  memories: ``MemoryAttention`` over the given memory features (their positional encodings
  and temporal rows added here) and object pointers (their 1-D sine positions projected here).
- ``memory_encoder``: ``SAM2Base._encode_new_memory`` from a low-res mask (upscaled here).
- ``mask_prompt``: ``add_new_mask``'s resize of a mask prompt to the model's input (the
  antialiased triangle filter as matrices, as the image encoder resizes) and
  ``SAM2Base._use_mask_as_output``: the mask as the frame's logits, its object pointer and score.

The encoder's embedding carries ``no_mem_embed`` (the image predictor's features); the memory
graphs take it off again where sam2 reads the raw backbone features.

sam2's rotary position encoding multiplies complex tensors, which no ONNX exporter accepts;
:func:`rotary_real` does the same sums on real pairs (``(a, b) -> (a cos - b sin, a sin + b cos)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.video_contract import (
    MASK_PROMPT_FILE,
    MASK_PROMPT_INPUTS,
    MASK_PROMPT_OUTPUTS,
    MEMORY_ATTENTION_FILE,
    MEMORY_ATTENTION_INPUTS,
    MEMORY_ATTENTION_OUTPUTS,
    MEMORY_ENCODER_FILE,
    MEMORY_ENCODER_INPUTS,
    MEMORY_ENCODER_OUTPUTS,
    NO_OBJ_SCORE,
    TRACKER_CONFIG_FILE,
    VIDEO_DECODER_FILE,
    VIDEO_DECODER_INPUTS,
    VIDEO_DECODER_OUTPUTS,
    VIDEO_GRAPH_FILES,
    TrackerConfig,
)

from sam_triton_export.family_sam2 import random_state_dict, resize_weights
from sam_triton_export.model_types import AnyModelType, get_sam2_model_type
from sam_triton_export.onnx_common import DEFAULT_OPSET, export_onnx

if TYPE_CHECKING:
    import torch

Array = npt.NDArray[Any]


# ----------------------------------------------------------------------------- building


def build_sam2_video_model(
    model_type: str | AnyModelType,
    checkpoint: Path | str | None = None,
    *,
    random_seed: int | None = None,
    extra_overrides: Sequence[str] = (),
) -> Any:
    """``sam2.build_sam.build_sam2_video_predictor`` on the CPU (the user's video path, with its
    post-processing switches) for ``model_type``, weights from ``checkpoint`` (official format)
    or a transformers directory (converted), or the family's seeded random weights;
    ``extra_overrides`` are more hydra overrides."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if (checkpoint is None) == (random_seed is None):
        raise ValueError("give exactly one of a checkpoint file or a random seed")
    spec = get_sam2_model_type(model_type)
    directory = checkpoint is not None and Path(checkpoint).is_dir()
    model = build_sam2_video_predictor(
        spec.config,
        str(checkpoint) if checkpoint is not None and not directory else None,
        device="cpu",
        hydra_overrides_extra=[*spec.overrides, *extra_overrides],
    )
    if directory:
        from sam_triton_export.hf_checkpoints import load_hf_sam2

        assert checkpoint is not None
        load_hf_sam2(checkpoint, model, spec)
    if random_seed is not None:
        model.load_state_dict(random_state_dict(spec, random_seed), strict=True)
    with torch.no_grad():
        return model.eval()


def tracker_config(model: Any) -> TrackerConfig:
    """The exported model's switches, as ``SAM2VideoPredictor`` holds them. Refuses the
    switches the tracker does not implement (none of sam2's released configs sets them)."""
    unsupported = {
        "memory_temporal_stride_for_eval": model.memory_temporal_stride_for_eval != 1,
        "max_cond_frames_in_attn": model.max_cond_frames_in_attn != -1,
        "non_overlap_masks": bool(getattr(model, "non_overlap_masks", False)),
        "non_overlap_masks_for_mem_enc": bool(model.non_overlap_masks_for_mem_enc),
        "add_all_frames_to_correct_as_cond": bool(getattr(model, "add_all_frames_to_correct_as_cond", False)),
        "clear_non_cond_mem_around_input": bool(getattr(model, "clear_non_cond_mem_around_input", False)),
        "soft_no_obj_ptr": bool(model.soft_no_obj_ptr),
        "directly_add_no_mem_embed off": not model.directly_add_no_mem_embed,
        "use_obj_ptrs_in_encoder off": not model.use_obj_ptrs_in_encoder,
        "proj_tpos_enc_in_obj_ptrs off": not model.proj_tpos_enc_in_obj_ptrs,
        "use_mask_input_as_output_without_sam off": not model.use_mask_input_as_output_without_sam,
    }
    refused = sorted(name for name, on in unsupported.items() if on)
    if refused:
        raise ValueError(f"the video tracker does not implement these SAM 2 switches: {refused}")
    md = model.sam_mask_decoder
    return TrackerConfig(
        image_size=int(model.image_size),
        num_maskmem=int(model.num_maskmem),
        max_obj_ptrs_in_encoder=int(model.max_obj_ptrs_in_encoder),
        hidden_dim=int(model.hidden_dim),
        mem_dim=int(model.mem_dim),
        multimask_output_in_sam=bool(model.multimask_output_in_sam),
        multimask_output_for_tracking=bool(model.multimask_output_for_tracking),
        multimask_min_pt_num=int(model.multimask_min_pt_num),
        multimask_max_pt_num=int(model.multimask_max_pt_num),
        use_multimask_token_for_obj_ptr=bool(model.use_multimask_token_for_obj_ptr),
        dynamic_multimask_via_stability=bool(md.dynamic_multimask_via_stability),
        dynamic_multimask_stability_delta=float(md.dynamic_multimask_stability_delta),
        dynamic_multimask_stability_thresh=float(md.dynamic_multimask_stability_thresh),
        binarize_mask_from_pts_for_mem_enc=bool(model.binarize_mask_from_pts_for_mem_enc),
        fill_hole_area=int(getattr(model, "fill_hole_area", 0)),
        use_signed_tpos_enc_to_obj_ptrs=bool(model.use_signed_tpos_enc_to_obj_ptrs),
        only_obj_ptrs_in_the_past_for_eval=bool(model.only_obj_ptrs_in_the_past_for_eval),
    )


# ----------------------------------------------------------------------------- rotary


def rotary_tables(
    dim: int, end_x: int, end_y: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [end_x * end_y, dim // 2] of ``compute_axial_cis``'s angles: the real and
    imaginary parts of its ``torch.polar(1, angle)`` (x frequencies, then y frequencies)."""
    import torch

    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode="floor").float()
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def rotary_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``apply_rotary_enc`` on real numbers: x [..., r * L, D] with cos/sin [L, D / 2]; each
    consecutive pair (a, b) of a token's channels is the complex number a + ib multiplied by
    cos + i sin. Keys longer than the table (r memories of L tokens) repeat it, as
    ``repeat_freqs_k`` does."""
    import torch

    length, half = cos.shape
    pairs = x.reshape(*x.shape[:-2], -1, length, half, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(x.shape)


# ----------------------------------------------------------------------------- graphs


def _position_encodings(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest feature level's sine position encoding [1, 256, h, w] (what memory
    attention's queries carry) and the memory encoder's [1, 64, h, w]: both depend on the
    size only."""
    import torch

    h = model.image_size // model.backbone_stride
    with torch.no_grad():
        curr_pos = model.image_encoder.neck.position_encoding(torch.zeros(1, model.hidden_dim, h, h))
        mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, h, h))
    return curr_pos.detach().clone(), mem_pos.detach().clone()


def video_decoder_module(model: Any) -> torch.nn.Module:
    import torch

    class VideoDecoderOnnx(torch.nn.Module):
        image_pe: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("image_pe", model.sam_prompt_encoder.get_dense_pe().detach().clone())

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            pix_feat, feats_0, feats_1, coords, labels, mask_input, has_mask_input = inputs
            m = self.model
            pe = m.sam_prompt_encoder
            # PromptEncoder.forward with boxes=None: the padding point is appended.
            sparse = pe._embed_points(coords, labels, pad=True)
            h, w = pix_feat.shape[-2:]
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
            has_mask = has_mask_input.reshape(1, 1, 1, 1)
            dense = has_mask * pe.mask_downscaling(mask_input) + (1 - has_mask) * no_mask
            masks, ious, tokens, object_score = m.sam_mask_decoder.predict_masks(
                image_embeddings=pix_feat,
                image_pe=self.image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=[feats_0, feats_1],
            )
            pointers = m.obj_ptr_proj(tokens)
            # _forward_sam_heads: a hard choice by the object score (soft_no_obj_ptr is off).
            appearing = (object_score > 0).float().unsqueeze(-1)  # [1, 1, 1]
            if m.fixed_no_obj_ptr:
                pointers = appearing * pointers
            pointers = pointers + (1 - appearing) * m.no_obj_ptr
            return masks, ious, pointers, object_score

    return VideoDecoderOnnx().eval()


def memory_attention_module(model: Any) -> torch.nn.Module:
    import torch

    curr_pos, mem_pos = _position_encodings(model)
    layer = model.memory_attention.layers[0]
    size = model.image_size // model.backbone_stride
    head_dim = layer.self_attn.internal_dim // layer.self_attn.num_heads
    cos, sin = rotary_tables(head_dim, size, size, layer.self_attn.compute_cis.keywords["theta"])

    class MemoryAttentionOnnx(torch.nn.Module):
        no_mem_embed: torch.Tensor
        curr_pos: torch.Tensor
        mem_pos: torch.Tensor
        cos: torch.Tensor
        sin: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("no_mem_embed", model.no_mem_embed.detach().clone().reshape(1, -1, 1, 1))
            self.register_buffer("curr_pos", curr_pos.flatten(2).permute(0, 2, 1))  # [1, L, C]
            self.register_buffer("mem_pos", mem_pos.flatten(2).permute(0, 2, 1))  # [1, L, mem_dim]
            self.register_buffer("cos", cos)
            self.register_buffer("sin", sin)

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            from sam2.modeling.sam2_utils import get_1d_sine_pe

            embedding, memories, tpos, pointers, positions = inputs
            m = self.model
            c, h, w = embedding.shape[1:]
            mem_dim = m.mem_dim
            # batch-first throughout ([1, tokens, channels]), as MemoryAttention runs.
            curr = (embedding - self.no_mem_embed).flatten(2).permute(0, 2, 1)
            spatial = memories.flatten(2).permute(0, 2, 1).reshape(1, -1, mem_dim)
            spatial_pos = self.mem_pos + m.maskmem_tpos_enc.index_select(0, tpos).reshape(-1, 1, mem_dim)
            spatial_pos = spatial_pos.reshape(1, -1, mem_dim)
            # A pointer of C channels is C / mem_dim tokens, each with the pointer's position.
            split = c // mem_dim
            ptr_tokens = pointers.reshape(1, -1, mem_dim)
            ptr_pos = m.obj_ptr_tpos_proj(get_1d_sine_pe(positions, dim=c))
            ptr_pos = ptr_pos.unsqueeze(1).expand(-1, split, -1).reshape(1, -1, mem_dim)
            out = self._attend(curr, spatial, spatial_pos, ptr_tokens, ptr_pos)
            return out.permute(0, 2, 1).reshape(1, c, h, w)

        def _attend(
            self,
            curr: torch.Tensor,
            spatial: torch.Tensor,
            spatial_pos: torch.Tensor,
            ptrs: torch.Tensor,
            ptr_pos: torch.Tensor,
        ) -> torch.Tensor:
            ma = self.model.memory_attention
            output = curr + 0.1 * self.curr_pos if ma.pos_enc_at_input else curr
            for lyr in ma.layers:
                # MemoryAttentionLayer._forward_sa
                tgt2 = lyr.norm1(output)
                q = tgt2 + self.curr_pos if lyr.pos_enc_at_attn else tgt2
                output = output + self._rope(lyr.self_attn, q, [q], tgt2)
                # _forward_ca: rotary on the spatial memories' keys only, not the pointers'.
                tgt2 = lyr.norm2(output)
                q = tgt2 + self.curr_pos if lyr.pos_enc_at_cross_attn_queries else tgt2
                keys = (
                    [spatial + spatial_pos, ptrs + ptr_pos]
                    if lyr.pos_enc_at_cross_attn_keys
                    else [spatial, ptrs]
                )
                values = torch.cat([spatial, ptrs], dim=1)
                output = output + self._rope(lyr.cross_attn_image, q, keys, values)
                tgt2 = lyr.norm3(output)
                output = output + lyr.linear2(lyr.activation(lyr.linear1(tgt2)))
            normed: torch.Tensor = ma.norm(output)
            return normed

        def _rope(
            self, attn: Any, q: torch.Tensor, keys: list[torch.Tensor], v: torch.Tensor
        ) -> torch.Tensor:
            """RoPEAttention.forward with the keys in parts: the first (self-attention's
            tokens, or the spatial memories) rotated, the rest (object pointers) not."""
            heads = attn.num_heads
            head_dim = attn.internal_dim // heads

            def split(x: torch.Tensor) -> torch.Tensor:
                # Attention._separate_heads, with the token count read from the shape: its -1
                # cannot reshape zero pointers' tokens in ONNX Runtime.
                return x.reshape(1, x.shape[1], heads, head_dim).transpose(1, 2)

            qh = rotary_real(split(attn.q_proj(q)), self.cos, self.sin)
            parts = [split(attn.k_proj(k)) for k in keys]
            kh = torch.cat([rotary_real(parts[0], self.cos, self.sin), *parts[1:]], dim=2)
            vh = split(attn.v_proj(v))
            out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
            projected: torch.Tensor = attn.out_proj(attn._recombine_heads(out))
            return projected

    return MemoryAttentionOnnx().eval()


def memory_encoder_module(model: Any) -> torch.nn.Module:
    import torch
    import torch.nn.functional as F

    class MemoryEncoderOnnx(torch.nn.Module):
        no_mem_embed: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("no_mem_embed", model.no_mem_embed.detach().clone().reshape(1, -1, 1, 1))

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            embedding, mask_logits, object_score, binarize = inputs
            m = self.model
            pix_feat = embedding - self.no_mem_embed
            size = m.image_size
            high_res = F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False)
            mask = torch.where(binarize.reshape(1, 1, 1, 1), (high_res > 0).float(), torch.sigmoid(high_res))
            mask = mask * m.sigmoid_scale_for_mem_enc + m.sigmoid_bias_for_mem_enc
            features: torch.Tensor = m.memory_encoder(pix_feat, mask, skip_mask_sigmoid=True)[
                "vision_features"
            ]
            if m.no_obj_embed_spatial is not None:
                absent = 1 - (object_score > 0).float()
                features = features + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
            return features

    return MemoryEncoderOnnx().eval()


def mask_prompt_module(model: Any) -> torch.nn.Module:
    import torch

    class MaskPromptOnnx(torch.nn.Module):
        no_mem_embed: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("no_mem_embed", model.no_mem_embed.detach().clone().reshape(1, -1, 1, 1))

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            embedding, mask = inputs
            m = self.model
            size = m.image_size
            # add_new_mask: an antialiased resize to the input size, then >= 0.5 (the identity
            # when the mask has that size already).
            plane = mask.unsqueeze(0)
            rows, cols = resize_weights(plane, 1, size), resize_weights(plane, 2, size)
            mask_inputs = ((rows @ mask @ cols.transpose(0, 1)) >= 0.5).float().reshape(1, 1, size, size)
            # _use_mask_as_output
            high_res = mask_inputs * 20.0 - 10.0
            low = size // 4
            rows, cols = resize_weights(high_res[0], 1, low), resize_weights(high_res[0], 2, low)
            low_res = (rows @ high_res[0, 0] @ cols.transpose(0, 1)).reshape(1, 1, low, low)
            # Only the pointer is used, which the high-resolution maps do not reach: zeros stand
            # in for them (and are pruned from the graph).
            h = embedding.shape[-1]
            unused = [
                torch.zeros(1, m.hidden_dim // 8, 4 * h, 4 * h),
                torch.zeros(1, m.hidden_dim // 4, 2 * h, 2 * h),
            ]
            heads = m._forward_sam_heads(
                backbone_features=embedding - self.no_mem_embed,
                mask_inputs=m.mask_downsample(mask_inputs),
                high_res_features=unused,
            )
            pointer = heads[5]
            appearing = (mask_inputs.flatten(1) > 0).any(dim=1, keepdim=True).float()
            if m.fixed_no_obj_ptr:
                pointer = appearing * pointer
            pointer = pointer + (1 - appearing) * m.no_obj_ptr
            return low_res, pointer, 20.0 * appearing - 10.0

    return MaskPromptOnnx().eval()


@dataclass(frozen=True)
class _Graph:
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: dict[str, dict[int, str]] = field(default_factory=dict)


def _example_inputs(model: Any) -> dict[str, tuple[torch.Tensor, ...]]:
    import torch

    size = model.image_size
    h = size // model.backbone_stride
    low = size // 4
    embedding = torch.randn(1, model.hidden_dim, h, h)
    feats = (torch.randn(1, 32, 4 * h, 4 * h), torch.randn(1, 64, 2 * h, 2 * h))
    return {
        VIDEO_DECODER_FILE: (
            embedding,
            *feats,
            torch.zeros(1, 2, 2),
            torch.tensor([[1.0, 0.0]]),
            torch.zeros(1, 1, low, low),
            torch.zeros(1),
        ),
        MEMORY_ATTENTION_FILE: (
            embedding,
            torch.randn(2, model.mem_dim, h, h),
            torch.tensor([6, 0]),
            torch.randn(3, model.hidden_dim),
            torch.tensor([0.0, 1 / 15, 2 / 15]),
        ),
        MASK_PROMPT_FILE: (embedding, torch.zeros(40, 56)),
        MEMORY_ENCODER_FILE: (
            embedding,
            torch.zeros(1, 1, low, low),
            torch.ones(1, 1),
            torch.ones(1, dtype=torch.bool),
        ),
    }


def export_video_graphs(
    model: Any, directory: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32"
) -> list[Path]:
    """The tracking graphs of ``model`` (a ``SAM2VideoPredictor``,
    :func:`build_sam2_video_model`) and its ``tracker_config.json`` into ``directory``."""
    config = tracker_config(model)
    directory.mkdir(parents=True, exist_ok=True)
    graphs = {
        VIDEO_DECODER_FILE: (
            video_decoder_module(model),
            _Graph(
                VIDEO_DECODER_FILE,
                VIDEO_DECODER_INPUTS,
                VIDEO_DECODER_OUTPUTS,
                {"point_coords": {1: "points"}, "point_labels": {1: "points"}},
            ),
        ),
        MEMORY_ATTENTION_FILE: (
            memory_attention_module(model),
            _Graph(
                MEMORY_ATTENTION_FILE,
                MEMORY_ATTENTION_INPUTS,
                MEMORY_ATTENTION_OUTPUTS,
                {
                    MEMORY_ATTENTION_INPUTS[1]: {0: "memories"},
                    MEMORY_ATTENTION_INPUTS[2]: {0: "memories"},
                    MEMORY_ATTENTION_INPUTS[3]: {0: "pointers"},
                    MEMORY_ATTENTION_INPUTS[4]: {0: "pointers"},
                },
            ),
        ),
        MEMORY_ENCODER_FILE: (
            memory_encoder_module(model),
            _Graph(MEMORY_ENCODER_FILE, MEMORY_ENCODER_INPUTS, MEMORY_ENCODER_OUTPUTS),
        ),
        MASK_PROMPT_FILE: (
            mask_prompt_module(model),
            _Graph(
                MASK_PROMPT_FILE,
                MASK_PROMPT_INPUTS,
                MASK_PROMPT_OUTPUTS,
                {MASK_PROMPT_INPUTS[-1]: {0: "height", 1: "width"}},
            ),
        ),
    }
    examples = _example_inputs(model)
    paths = []
    for name, (module, graph) in graphs.items():
        paths.append(
            export_onnx(
                module,
                examples[name],
                directory / name,
                input_names=graph.inputs,
                output_names=graph.outputs,
                dynamic_axes=graph.axes,
                opset=opset,
                precision=precision,
            )
        )
    config_path = directory / TRACKER_CONFIG_FILE
    config_path.write_text(config.to_json() + "\n")
    return [*paths, config_path]


# ----------------------------------------------------------------------------- verify


@dataclass
class VideoVerifyReport:
    """Largest absolute difference of each graph's outputs from sam2's modules, and the
    reference's value range for scale."""

    max_abs: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, float] = field(default_factory=dict)
    selections_agree: bool = True

    def record(self, name: str, ours: Array, ref: Array) -> None:
        self.max_abs[name] = max(self.max_abs.get(name, 0.0), float(np.abs(ours - ref).max()))
        self.ranges[name] = max(self.ranges.get(name, 0.0), float(ref.max() - ref.min()))

    def passed(self, relative: float = 1e-3) -> bool:
        """Every difference under ``relative`` of its output's range, and the same choices."""
        return self.selections_agree and all(
            self.max_abs[name] <= relative * max(self.ranges[name], 1.0) for name in self.max_abs
        )

    def lines(self) -> list[str]:
        return [
            f"  {name}: max |diff| {self.max_abs[name]:.2e} (range {self.ranges[name]:.3g})"
            for name in sorted(self.max_abs)
        ]


def verify_video_graphs(directory: Path, model: Any, *, seed: int = 0) -> VideoVerifyReport:
    """The exported graphs on onnxruntime against sam2's own modules of ``model`` on seeded
    random features: ``_forward_sam_heads`` (multimask and single mask, points and a mask
    prompt), ``_prepare_memory_conditioned_features`` (conditioning frame, previous frames,
    pointers) and ``_encode_new_memory`` (sigmoid and binarized masks, visible and not)."""
    import onnxruntime as ort
    import torch

    missing = [name for name in VIDEO_GRAPH_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no video tracking graphs in {directory} (missing {', '.join(missing)})")
    sessions = {
        name: ort.InferenceSession(str(directory / name), providers=["CPUExecutionProvider"])
        for name in VIDEO_GRAPH_FILES
    }
    gen = torch.Generator().manual_seed(seed)
    size = model.image_size
    h = size // model.backbone_stride
    report = VideoVerifyReport()
    with torch.no_grad():
        backbone = model.forward_image(torch.rand(1, 3, size, size, generator=gen) * 2 - 1)
        _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone)
        raw = vision_feats[-1].permute(1, 2, 0).reshape(1, -1, h, h)
        embedding = (raw + model.no_mem_embed.reshape(1, -1, 1, 1)).numpy()
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.shape[2], *s)
            for x, s in zip(vision_feats[:-1], feat_sizes[:-1], strict=True)
        ]
        _verify_decoder(sessions[VIDEO_DECODER_FILE], model, raw, high_res, report, gen)
        _verify_memory_encoder(
            sessions[MEMORY_ENCODER_FILE], model, vision_feats, feat_sizes, embedding, report, gen
        )
        _verify_mask_prompt(sessions[MASK_PROMPT_FILE], model, vision_feats, feat_sizes, embedding, report)
        _verify_memory_attention(
            sessions[MEMORY_ATTENTION_FILE],
            model,
            vision_feats,
            vision_pos,
            feat_sizes,
            embedding,
            report,
            gen,
        )
    return report


def _verify_decoder(
    session: Any, model: Any, pix: Any, high_res: list[Any], report: VideoVerifyReport, gen: Any
) -> None:
    import torch

    low = model.image_size // 4
    cases = [
        (torch.tensor([[[0.3, 0.4]]]) * model.image_size, torch.tensor([[1]]), None, True),
        (torch.tensor([[[0.3, 0.4], [0.6, 0.5]]]) * model.image_size, torch.tensor([[1, 0]]), None, False),
        (
            torch.zeros(1, 1, 2),
            -torch.ones(1, 1, dtype=torch.int32),
            torch.randn(1, 1, low, low, generator=gen) * 8,
            False,
        ),
    ]
    for coords, labels, mask, multimask in cases:
        ref = model._forward_sam_heads(
            backbone_features=pix,
            point_inputs={"point_coords": coords, "point_labels": labels},
            mask_inputs=mask,
            high_res_features=high_res,
            multimask_output=multimask,
        )
        feed = {
            VIDEO_DECODER_INPUTS[0]: pix.numpy(),
            VIDEO_DECODER_INPUTS[1]: high_res[0].numpy(),
            VIDEO_DECODER_INPUTS[2]: high_res[1].numpy(),
            VIDEO_DECODER_INPUTS[3]: coords.numpy().astype(np.float32),
            VIDEO_DECODER_INPUTS[4]: labels.numpy().astype(np.float32),
            VIDEO_DECODER_INPUTS[5]: (mask if mask is not None else torch.zeros(1, 1, low, low)).numpy(),
            VIDEO_DECODER_INPUTS[6]: np.array([0.0 if mask is None else 1.0], np.float32),
        }
        masks, ious, pointers, score = session.run(None, feed)
        ref_multi, _, ref_ious, _, _, ref_ptr, ref_score = (x.numpy() for x in ref)
        report.record("video_decoder object_score_logits", score, ref_score)
        visible = score[0, 0] > 0
        picked = slice(1, 4) if multimask else slice(0, 1)
        if multimask:
            report.record(
                "video_decoder mask_logits", np.where(visible, masks[:, picked], NO_OBJ_SCORE), ref_multi
            )
            report.record("video_decoder iou_predictions", ious[:, picked], ref_ious)
            best = 1 + int(np.argmax(ious[0, 1:]))
            report.selections_agree &= best == 1 + int(np.argmax(ref_ious[0]))
            report.record("video_decoder object_pointer", pointers[:, best], ref_ptr)
        else:
            # the single-mask token's pointer whatever the stability fallback picks for the mask
            report.record("video_decoder object_pointer", pointers[:, 0], ref_ptr)


def _verify_mask_prompt(
    session: Any,
    model: Any,
    vision_feats: list[Any],
    feat_sizes: list[Any],
    embedding: Array,
    report: VideoVerifyReport,
) -> None:
    """``add_new_mask``'s resize and ``_use_mask_as_output``: a disc at a small video size, and
    an empty mask (the object absent)."""
    import torch
    import torch.nn.functional as F

    yy, xx = np.mgrid[:45, :70]
    for mask in ((yy - 20) ** 2 + (xx - 30) ** 2 < 12**2, np.zeros((45, 70), bool)):
        size = (model.image_size,) * 2
        resized = F.interpolate(
            torch.from_numpy(mask)[None, None].float(),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        pix = vision_feats[-1].permute(1, 2, 0).reshape(1, model.hidden_dim, *feat_sizes[-1])
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.shape[2], *s)
            for x, s in zip(vision_feats[:-1], feat_sizes[:-1], strict=True)
        ]
        ref = model._use_mask_as_output(pix, high_res, (resized >= 0.5).float())
        feed = dict(
            zip(
                MASK_PROMPT_INPUTS,
                (embedding, mask.astype(np.float32)),
                strict=True,
            )
        )
        low, pointer, score = session.run(None, feed)
        report.record("mask_prompt low_res_mask", low, ref[3].numpy())
        report.record("mask_prompt object_pointer", pointer, ref[5].numpy())
        report.record("mask_prompt object_score_logits", score, ref[6].numpy())


def _verify_memory_encoder(
    session: Any,
    model: Any,
    vision_feats: list[Any],
    feat_sizes: list[Any],
    embedding: Array,
    report: VideoVerifyReport,
    gen: Any,
) -> None:
    import torch
    import torch.nn.functional as F

    low = model.image_size // 4
    for binarize, score in ((True, 5.0), (False, -3.0)):
        logits = torch.randn(1, 1, low, low, generator=gen) * 6
        high = F.interpolate(logits, size=(model.image_size,) * 2, mode="bilinear", align_corners=False)
        scores = torch.tensor([[score]])
        ref, _ = model._encode_new_memory(vision_feats, feat_sizes, high, scores, is_mask_from_pts=binarize)
        (ours,) = session.run(
            None,
            dict(
                zip(
                    MEMORY_ENCODER_INPUTS,
                    (embedding, logits.numpy(), scores.numpy(), np.array([binarize])),
                    strict=True,
                )
            ),
        )
        report.record("memory_encoder features", ours, ref.numpy())


def _verify_memory_attention(
    session: Any,
    model: Any,
    vision_feats: list[Any],
    vision_pos: list[Any],
    feat_sizes: list[Any],
    embedding: Array,
    report: VideoVerifyReport,
    gen: Any,
) -> None:
    """Frame 3 of 5 tracked forward (conditioning frame 0, previous frames 1 and 2, a pointer
    each); frame 1 in reverse (conditioning frame 2 is in its past); frame 0 forward with the
    conditioning frame 2 ahead (no pointer in the past: the graph with zero pointers)."""
    import torch

    h = model.image_size // model.backbone_stride
    mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, h, h))

    def out() -> dict[str, Any]:
        return {
            "maskmem_features": torch.randn(1, model.mem_dim, h, h, generator=gen).to(torch.bfloat16),
            "maskmem_pos_enc": [mem_pos],
            "obj_ptr": torch.randn(1, model.hidden_dim, generator=gen),
        }

    frames = {t: out() for t in range(3)}
    t_max = min(5, model.max_obj_ptrs_in_encoder) - 1
    cases = [
        # frame, reverse, cond frames, non-cond frames, memory order and tpos rows, pointers and positions
        (3, False, [0], [1, 2], [0, 1, 2], [model.num_maskmem - 1, 1, 0], [0, 2, 1], [3, 1, 2]),
        (1, True, [2], [], [2], [model.num_maskmem - 1], [2], [1]),
        (0, False, [2], [], [2], [model.num_maskmem - 1], [], []),
    ]
    for frame, reverse, cond, non_cond, order, tpos, ptr_frames, ptr_pos in cases:
        output_dict = {
            "cond_frame_outputs": {t: frames[t] for t in cond},
            "non_cond_frame_outputs": {t: frames[t] for t in non_cond},
        }
        _cast_memories_to_fp32(output_dict)
        ref = model._prepare_memory_conditioned_features(
            frame_idx=frame,
            is_init_cond_frame=False,
            current_vision_feats=vision_feats[-1:],
            current_vision_pos_embeds=vision_pos[-1:],
            feat_sizes=feat_sizes[-1:],
            output_dict=output_dict,
            num_frames=5,
            track_in_reverse=reverse,
        )
        memories = torch.cat([frames[t]["maskmem_features"].float() for t in order]).numpy()
        pointers = np.concatenate(
            [frames[t]["obj_ptr"].numpy() for t in ptr_frames]
            or [np.zeros((0, model.hidden_dim), np.float32)]
        )
        feed = dict(
            zip(
                MEMORY_ATTENTION_INPUTS,
                (
                    embedding,
                    memories,
                    np.array(tpos, np.int64),
                    pointers,
                    np.array(ptr_pos, np.float32) / np.float32(t_max),
                ),
                strict=True,
            )
        )
        (ours,) = session.run(None, feed)
        report.record("memory_attention features", ours, ref.numpy())


def _cast_memories_to_fp32(output_dict: dict[str, dict[int, dict[str, Any]]]) -> None:
    """sam2 stores memory features in bfloat16 and on a GPU reads them under bf16 autocast; on
    a CPU in fp32 its memory attention needs them as fp32 (the values stay bf16-rounded)."""
    for outputs in output_dict.values():
        for out in outputs.values():
            out["maskmem_features"] = out["maskmem_features"].float()
