"""SAM 2 / 2.1 image models (the ``sam2`` package): build, checkpoints, ONNX graphs, verify.

The family's served facts are ``sam_triton_common.contract.SAM2``. What this module exports:

- ``sam_encoder``: the *original* uint8 image [1, H, W, 3] -> the image embedding and both
  high-resolution feature maps, exactly as ``SAM2ImagePredictor.set_image`` computes them:
  ``SAM2Transforms`` (ToTensor, an antialiased bilinear resize of the whole image to a
  1024 square, Normalize), ``forward_image`` (which applies the decoder's ``conv_s0``/
  ``conv_s1``), and ``no_mem_embed`` added to the lowest-resolution level. The resize is the
  same separable triangle filter torch's antialiased bilinear uses, written as two matmuls
  whose weights the graph computes from H and W; the exporter cannot trace torch's kernel.
- ``sam_decoder``: B images x P prompts x N points, with both feature maps, -> low-res logits
  and scores, with ``MaskDecoder.forward``'s selection: tokens 1-3 for multimask, else token 0
  with the dynamic multimask fallback (``dynamic_multimask_via_stability``), as built by
  ``sam2.build_sam.build_sam2`` for the image predictor.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import (
    IMAGE,
    IMAGE_SIZE,
    LOW_RES_SIZE,
    SAM2,
)

from sam_triton_export.checkpoints import CheckpointError
from sam_triton_export.model_builder import save_checkpoint, seeded_state_dict
from sam_triton_export.model_types import SAM2_MODEL_TYPES as SAM2_MODEL_TYPES
from sam_triton_export.model_types import AnyModelType, get_sam2_model_type
from sam_triton_export.model_types import Sam2ModelType as Sam2ModelType
from sam_triton_export.onnx_common import DEFAULT_OPSET, export_onnx
from sam_triton_export.verify import (
    TOLERANCES,
    CaseResult,
    Prompt,
    VerifyReport,
    mask_iou,
    prompts_for,
    run_decoder,
    sample_images,
)

if TYPE_CHECKING:
    import torch

Array = npt.NDArray[Any]

# SAM2Transforms' normalisation (ImageNet statistics on [0, 1] pixels).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def is_sam2(model_type: str | AnyModelType) -> bool:
    return isinstance(model_type, Sam2ModelType) or model_type in SAM2_MODEL_TYPES


# ----------------------------------------------------------------------------- building


def instantiate_sam2(model_type: str | AnyModelType, checkpoint: Path | None = None) -> Any:
    """``sam2.build_sam.build_sam2`` on the CPU, eval mode, with the image predictor's
    post-processing switches (the dynamic multimask fallback): the user's code path, which
    loads ``checkpoint`` (``{"model": state_dict}``) strictly when given."""
    from sam2.build_sam import build_sam2

    spec = get_sam2_model_type(model_type)
    return build_sam2(
        spec.config,
        str(checkpoint) if checkpoint is not None else None,
        device="cpu",
        hydra_overrides_extra=list(spec.overrides),
    )


def random_state_dict(model_type: str | AnyModelType, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a fresh ``model_type``, fully determined by ``seed``; parameters that
    sam2 initialises to zero (position embeddings, norm biases) get small noise."""
    spec = get_sam2_model_type(model_type)
    return seeded_state_dict(lambda: instantiate_sam2(spec), seed, lambda _, p: bool((p == 0).all()))


def save_random_checkpoint(model_type: str | AnyModelType, path: Path | str, seed: int) -> Path:
    """A seeded random ``model_type`` checkpoint in the official format, ``{"model": state_dict}``."""
    return save_checkpoint({"model": random_state_dict(model_type, seed)}, path)


_TRUNK_PATCH = "image_encoder.trunk.patch_embed.proj.weight"
_TRUNK_BLOCK = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")
_SAM1_PATCH = "image_encoder.patch_embed.proj.weight"
# Parameters SAM 2.1 added to SAM 2.0's model (2.0 files lack them; 2.1 files carry them).
_SAM21_ONLY = "no_obj_embed_spatial"


def check_checkpoint(path: Path, model_type: str | AnyModelType) -> None:
    """Raise CheckpointError unless ``path`` holds a ``model_type`` checkpoint; names what was
    expected and what was found (a SAM 1 file, another size, another SAM 2 version)."""
    import torch

    expected = get_sam2_model_type(model_type)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid PyTorch checkpoint: {e}") from e
    state = loaded.get("model") if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        if isinstance(loaded, dict) and _SAM1_PATCH in loaded:
            raise CheckpointError(
                f"checkpoint {path} is a SAM 1 checkpoint, but {expected.describe()} was requested; "
                "use --model-type vit_b/vit_l/vit_h"
            )
        raise CheckpointError(
            f"checkpoint {path} is not a SAM 2 checkpoint (expected {{'model': state_dict}})"
        )
    patch = state.get(_TRUNK_PATCH)
    if patch is None:
        found = "a SAM 1 state dict" if _SAM1_PATCH in state else "no Hiera image encoder"
        raise CheckpointError(f"checkpoint {path} holds {found}, but {expected.describe()} was requested")
    width = int(patch.shape[0])
    depth = 1 + max((int(m.group(1)) for k in state if (m := _TRUNK_BLOCK.match(k))), default=-1)
    version = "2.1" if _SAM21_ONLY in state else "2.0"
    if (width, depth, version) != (expected.trunk_width, expected.trunk_depth, expected.version):
        matches = [
            t.name
            for t in SAM2_MODEL_TYPES.values()
            if (t.trunk_width, t.trunk_depth, t.version) == (width, depth, version)
        ]
        hint = f"; use --model-type {matches[0]}" if matches else ""
        raise CheckpointError(
            f"checkpoint {path} is a SAM {version} Hiera of width {width}, depth {depth}, but "
            f"{expected.describe()} was requested{hint}"
        )


def build_sam2_model(
    model_type: str | AnyModelType, checkpoint: Path | str | None = None, *, random_seed: int | None = None
) -> Any:
    """SAM 2 of ``model_type`` with weights from ``checkpoint`` (an official file, checked, then
    loaded by sam2's own builder; or a transformers directory, converted) or, only when asked,
    ``random_seed``."""
    import torch

    if (checkpoint is None) == (random_seed is None):
        raise ValueError("give exactly one of a checkpoint file or a random seed")
    spec = get_sam2_model_type(model_type)
    if checkpoint is not None and Path(checkpoint).is_dir():
        from sam_triton_export.hf_checkpoints import load_hf_sam2

        model = instantiate_sam2(spec)
        load_hf_sam2(checkpoint, model, spec)
        return model.eval()
    if checkpoint is not None:
        check_checkpoint(Path(checkpoint), spec)
        return instantiate_sam2(spec, Path(checkpoint))
    assert random_seed is not None
    model = instantiate_sam2(spec)
    model.load_state_dict(random_state_dict(spec, random_seed), strict=True)
    with torch.no_grad():
        return model.eval()


# ----------------------------------------------------------------------------- graphs


def resize_weights(image: torch.Tensor, axis: int, size_out: int = IMAGE_SIZE) -> torch.Tensor:
    """[size_out, size_in] weights of torch's antialiased bilinear resize (align_corners=False)
    along ``axis`` of ``image``: a triangle filter widened by the scale when shrinking,
    normalised per output pixel. The input size is read as a tensor so the graph keeps it dynamic."""
    import torch

    n_in = torch._shape_as_tensor(image)[axis].to(torch.float32)
    scale = n_in / size_out
    center = scale * (torch.arange(size_out, dtype=torch.float32) + 0.5)
    support = torch.clamp(scale, min=1.0)
    source = torch.arange(image.shape[axis], dtype=torch.float32) + 0.5
    weights = torch.clamp(1 - ((source.unsqueeze(0) - center.unsqueeze(1)) / support).abs(), min=0)
    return weights / weights.sum(dim=1, keepdim=True)


def encoder_module(model: Any) -> torch.nn.Module:
    import torch

    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (PIXEL_MEAN, PIXEL_STD))

    class Sam2EncoderOnnx(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.no_mem_embed = torch.nn.Parameter(model.no_mem_embed.detach().clone().view(1, -1, 1, 1))

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # ToTensor
            rows, cols = resize_weights(image, 1), resize_weights(image, 2)
            x = (rows @ x @ cols.transpose(0, 1) - mean) / std  # Resize, then Normalize
            out = self.model.forward_image(x)
            fpn = out["backbone_fpn"][-3:]
            # set_image: no_mem_embed is added to the lowest-resolution level only.
            embedding = fpn[2] + self.no_mem_embed if self.model.directly_add_no_mem_embed else fpn[2]
            return embedding, fpn[0], fpn[1]

    return Sam2EncoderOnnx().eval()


def export_encoder(model: Any, path: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32") -> Path:
    import torch

    image = torch.zeros((1, 480, 640, 3), dtype=torch.uint8)
    outputs = SAM2.encoder_outputs
    axes = {IMAGE: {0: "batch", 1: "height", 2: "width"}, **{name: {0: "batch"} for name in outputs}}
    return export_onnx(
        encoder_module(model),
        (image,),
        path,
        input_names=SAM2.encoder_inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset=opset,
        precision=precision,
    )


def decoder_module(model: Any) -> torch.nn.Module:
    """B images x P prompts through ``SAM2ImagePredictor._predict``'s prompt encoder and mask
    decoder, each prompt with its own image's features (broadcast, not repeat_interleave)."""
    import torch

    pe_module = model.sam_prompt_encoder
    md = model.sam_mask_decoder

    class Sam2DecoderOnnx(torch.nn.Module):
        image_pe: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.pe = pe_module
            self.md = md
            self.register_buffer("image_pe", pe_module.get_dense_pe().detach().clone())

        def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            # PromptEncoder._embed_points after its padding (the client adds the -1 point).
            coords = (coords + 0.5) / IMAGE_SIZE
            embedding: torch.Tensor = self.pe.pe_layer._pe_encoding(coords)
            labels = labels.unsqueeze(-1)
            embedding = torch.where(
                labels == -1, torch.zeros_like(embedding) + self.pe.not_a_point_embed.weight, embedding
            )
            for i in range(self.pe.num_point_embeddings):
                embedding = torch.where(
                    labels == i, embedding + self.pe.point_embeddings[i].weight, embedding
                )
            return embedding

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``SAM2.decoder_inputs``: the embedding and both feature maps [B, ...], prompts
            [B, P, N, 2] / [B, P, N], mask input [B, P, 1, 256, 256] and its switch [B, P], and
            multimask [B, 1] (row 0 decides for the request)."""
            (
                image_embeddings,
                feats_0,
                feats_1,
                point_coords,
                point_labels,
                mask_input,
                has_mask_input,
                multimask_output,
            ) = inputs
            batch, prompts = point_labels.shape[:2]
            flat = batch * prompts
            sparse = self._embed_points(point_coords.flatten(0, 1), point_labels.flatten(0, 1))
            no_mask = self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            has_mask = has_mask_input.reshape(flat, 1, 1, 1)
            dense = self.pe.mask_downscaling(mask_input.reshape(flat, 1, LOW_RES_SIZE, LOW_RES_SIZE))
            dense = has_mask * dense + (1 - has_mask) * no_mask

            # MaskDecoder.predict_masks, step for step.
            s = 1 if md.pred_obj_scores else 0
            weights = [md.obj_score_token.weight] if md.pred_obj_scores else []
            output_tokens = torch.cat([*weights, md.iou_token.weight, md.mask_tokens.weight], dim=0)
            tokens = torch.cat((output_tokens.unsqueeze(0).expand(flat, -1, -1), sparse), dim=1)
            c, h, w = image_embeddings.shape[1:]
            src = (image_embeddings.unsqueeze(1) + dense.reshape(batch, prompts, c, h, w)).reshape(
                flat, c, h, w
            )
            hs, src = md.transformer(src, self.image_pe, tokens)
            iou_token_out = hs[:, s, :]
            mask_tokens_out = hs[:, s + 1 : (s + 1 + md.num_mask_tokens), :]
            src = src.transpose(1, 2).reshape(flat, c, h, w)
            dc1, ln1, act1, dc2, act2 = md.output_upscaling

            def per_prompt(feat: torch.Tensor) -> torch.Tensor:
                return feat.unsqueeze(1).expand(-1, prompts, -1, -1, -1).reshape(flat, *feat.shape[1:])

            up = act1(ln1(dc1(src) + per_prompt(feats_1)))
            up = act2(dc2(up) + per_prompt(feats_0))
            hyper_in = torch.stack(
                [
                    md.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
                    for i in range(md.num_mask_tokens)
                ],
                dim=1,
            )
            uc, uh, uw = up.shape[1:]
            masks = (hyper_in @ up.reshape(flat, uc, uh * uw)).reshape(flat, -1, uh, uw)
            iou_pred = md.iou_prediction_head(iou_token_out)

            # MaskDecoder.forward's selection, decided at run time: candidate 0 is the single
            # mask after the dynamic fallback, 1..3 the multimask outputs.
            single, single_iou = self._single(masks, iou_pred)
            candidates = torch.cat([single, masks[:, 1:]], dim=1)
            candidate_iou = torch.cat([single_iou, iou_pred[:, 1:]], dim=1)
            ids = torch.arange(candidates.shape[1])
            multimask = multimask_output.reshape(-1)[0]
            keep = ((ids >= 1) & multimask) | ((ids == 0) & ~multimask)
            selected = torch.nonzero(keep).reshape(-1)
            kept = selected.shape[0]
            return (
                candidates.index_select(1, selected).reshape(batch, prompts, kept, uh, uw),
                candidate_iou.index_select(1, selected).reshape(batch, prompts, kept),
            )

        def _single(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.md.dynamic_multimask_via_stability:
                return masks[:, 0:1], iou[:, 0:1]
            # _dynamic_multimask_via_stability, with gathers for its advanced indexing.
            best = torch.argmax(iou[:, 1:], dim=-1, keepdim=True)  # [flat, 1]
            best_iou = torch.gather(iou[:, 1:], 1, best)
            index = best.reshape(-1, 1, 1, 1).expand(-1, 1, masks.shape[2], masks.shape[3])
            best_masks = torch.gather(masks[:, 1:], 1, index)
            single = masks[:, 0:1]
            flat_logits = single.flatten(-2)
            delta = self.md.dynamic_multimask_stability_delta
            area_i = torch.sum(flat_logits > delta, dim=-1).float()
            area_u = torch.sum(flat_logits > -delta, dim=-1).float()
            stability = torch.where(area_u > 0, area_i / area_u, torch.ones_like(area_i))
            stable = stability >= self.md.dynamic_multimask_stability_thresh  # [flat, 1]
            return (
                torch.where(stable[..., None, None], single, best_masks),
                torch.where(stable, iou[:, 0:1], best_iou),
            )

    return Sam2DecoderOnnx().eval()


def export_decoder(model: Any, path: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32") -> Path:
    import torch

    feats = [torch.randn(1, *shape) for shape in SAM2.features.values()]
    prompts = (
        torch.zeros(1, 1, 2, 2),
        torch.tensor([[[1.0, -1.0]]]),
        torch.zeros(1, 1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        torch.zeros(1, 1),
        torch.ones(1, 1, dtype=torch.bool),
    )
    names = SAM2.decoder_inputs
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in names}
    for name in ("point_coords", "point_labels", "mask_input", "has_mask_input"):
        axes[name][1] = "prompts"
    axes["point_coords"][2] = axes["point_labels"][2] = "points"
    from sam_triton_common.contract import DECODER_OUTPUTS, IOU_PREDICTIONS, LOW_RES_MASKS

    axes[LOW_RES_MASKS] = {0: "batch", 1: "prompts", 2: "masks"}
    axes[IOU_PREDICTIONS] = {0: "batch", 1: "prompts", 2: "masks"}
    return export_onnx(
        decoder_module(model),
        (*feats, *prompts),
        path,
        input_names=names,
        output_names=DECODER_OUTPUTS,
        dynamic_axes=axes,
        opset=opset,
        precision=precision,
    )


# ----------------------------------------------------------------------------- verify


def prompt_arrays(prompt: Prompt, hw: tuple[int, int]) -> tuple[Array, Array]:
    """``SAM2ImagePredictor._prep_prompts`` + ``_predict``'s merge: coordinates scaled by
    1024/w and 1024/h, box corners (labels 2, 3) first, then the points, then the -1 padding
    point the prompt encoder always appends (boxes go in as points)."""
    h, w = hw
    scale = np.array([IMAGE_SIZE / w, IMAGE_SIZE / h])
    coords: list[Array] = []
    labels: list[Array] = []
    if prompt.box is not None:
        coords.append(prompt.box.reshape(2, 2) * scale)
        labels.append(np.array([2, 3], np.float32))
    if prompt.points is not None and prompt.labels is not None:
        coords.append(prompt.points * scale)
        labels.append(prompt.labels.astype(np.float32))
    coords.append(np.zeros((1, 2)))
    labels.append(np.array([-1], np.float32))
    return np.concatenate(coords).astype(np.float32), np.concatenate(labels)


def upscale_masks(logits: Array, hw: tuple[int, int]) -> Array:
    """``SAM2Transforms.postprocess_masks`` with its defaults (no hole/sprinkle clean-up)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(logits[None]), hw, mode="bilinear", align_corners=False)
    return out[0].numpy() > 0.0


def verify_images() -> list[Array]:
    """The family's parity images: a photo-like image and the shapes SAM 2's square resize
    treats most differently from it: a long strip and a tiny 17x23 image."""
    rng = np.random.default_rng(3)
    strip = rng.integers(0, 256, (90, 1200, 3), dtype=np.uint8)
    strip[:, 300:700] = (200, 40, 40)
    tiny = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    return [sample_images()[0], strip, tiny]


def verify_models(
    encoder_path: Path,
    decoder_path: Path,
    model: Any,
    *,
    precision: str = "fp32",
    images: list[Array] | None = None,
    log: Callable[[str], None] = print,
) -> VerifyReport:
    """The exported graphs on onnxruntime against ``SAM2ImagePredictor(model)``, end to end
    (the decoder gets the exported encoder's features)."""
    import onnxruntime as ort
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    report = VerifyReport(
        precision=precision,
        tolerances=TOLERANCES[precision],
        reference="sam2 SAM2ImagePredictor",
        has_split_decoder=False,
    )
    options = ort.SessionOptions()
    encoder = ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])
    report.runtimes = {"encoder": "CPUExecutionProvider", "decoder": "CPUExecutionProvider"}
    predictor = SAM2ImagePredictor(model)
    for index, image in enumerate(images if images is not None else verify_images()):
        predictor.set_image(image)
        features = encoder.run(None, {IMAGE: image[None]})
        reference = [predictor._features["image_embed"], *predictor._features["high_res_feats"]]
        for ours, ref in zip(features, reference, strict=True):
            ref_np = ref.detach().numpy()
            report.embedding_max_abs = max(report.embedding_max_abs, float(np.abs(ours - ref_np).max()))
            report.embedding_range = max(report.embedding_range, float(ref_np.max() - ref_np.min()))
        report.cases.extend(_image_cases(predictor, decoder, features, (image.shape[0], image.shape[1])))
        log(f"  image {index + 1}: {image.shape[0]}x{image.shape[1]} checked")
    return report


def _image_cases(
    predictor: Any, decoder: Any, features: list[Array], hw: tuple[int, int]
) -> list[CaseResult]:
    h, w = hw
    cases = []
    first: tuple[Array, Array] | None = None
    for prompt in prompts_for(h, w):
        mask_input = None
        if prompt.refine and first is not None:
            mask_input = first[0][int(np.argmax(first[1]))][None].astype(np.float32)
        masks, scores, logits = predictor.predict(
            point_coords=prompt.points,
            point_labels=prompt.labels,
            box=prompt.box,
            mask_input=mask_input,
            multimask_output=prompt.multimask,
        )
        first = first or (logits, scores)
        coords, labels = prompt_arrays(prompt, hw)
        out_logits, out_scores = run_decoder(
            decoder,
            dict(zip(SAM2.encoder_outputs, features, strict=True)),
            coords[None, None],
            labels[None, None],
            None if mask_input is None else mask_input[None, None],
            prompt.multimask,
        )
        full = upscale_masks(out_logits[0, 0], hw)
        cases.append(
            CaseResult(
                name=f"{h}x{w} {prompt.name}",
                score_max_abs=float(np.abs(out_scores[0, 0] - scores).max()),
                # the predictor clamps its returned low-res logits to [-32, 32]
                logits_max_abs=float(np.abs(np.clip(out_logits[0, 0], -32, 32) - logits).max()),
                logits_range=float(logits.max() - logits.min()),
                ious=[mask_iou(full[k], masks[k] > 0) for k in range(masks.shape[0])],
            )
        )
    return cases
