"""The ``sam_decoder`` graph: B image embeddings x P prompts x N points -> low-res mask logits.

segment_anything's ``MaskDecoder.predict_masks`` repeat_interleaves *one* image embedding
over all prompts, and its ``SamOnnxModel`` bakes single/multi-mask choice into the graph.
Here every prompt is paired with its own image's embedding (so one call serves single-prompt
requests from different images as well as many prompts on one image), and the multimask
switch is a run-time input. The math is ``predict_masks``' step for step, using the
module's own submodules and weights, with one change of layout for speed: the output
upscaling runs channels-last (see ``_masks_channels_last``), which is the same arithmetic
in a different summation order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam_triton_common.contract import DECODER_INPUTS as INPUT_NAMES
from sam_triton_common.contract import DECODER_OUTPUTS as OUTPUT_NAMES
from sam_triton_common.contract import (
    IMAGE_EMBEDDINGS,
    IMAGE_FEATURE_NAMES,
    IMAGE_FEATURES_FILE,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    PROMPT_DECODER_FILE,
    PROMPT_DECODER_INPUTS,
)

from sam_triton_export.model_types import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from sam_triton_export.onnx_common import DEFAULT_OPSET, export_onnx
from sam_triton_export.reassociated_attention import (
    image_to_tokens,
    projected_image_to_tokens,
    separate_heads,
    tokens_to_image,
    tokens_to_projected_image,
)

if TYPE_CHECKING:
    import onnx
    import torch
    from segment_anything.modeling import Sam

# The graph's tensor names are the served model's: one definition, beside the model that reads them.
DECODER_INPUTS = INPUT_NAMES
DECODER_OUTPUTS = OUTPUT_NAMES


def _transposed_conv_rows(conv: torch.nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-2, stride-2 ConvTranspose2d on pixels as rows, ``x`` [n, Cin], as one matmul.

    Each input pixel writes its own 2x2 output block, so the layer is ``x @ W`` with W laid out
    as (Cin, 2, 2, Cout): out [4n, Cout], the rows of pixel r's block at 4r + 2i + j. Where
    those rows sit in the image is left to the caller (the layers after are per pixel).
    """
    import torch

    if conv.kernel_size != (2, 2) or conv.stride != (2, 2) or conv.bias is None:
        raise ValueError(f"expected SAM's kernel-2, stride-2 ConvTranspose2d with bias, got {conv}")
    c_in, c_out = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    # addmm on 2-D operands exports as one Gemm with the bias fused in.
    return torch.addmm(conv.bias.repeat(4), x, weight).reshape(-1, c_out)


def _masks_channels_last(md: Any, src: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
    """``output_upscaling`` then ``hyper_in @ upscaled``, channels-last.

    ``src`` is the transformer's [B, HW, C] output as it comes (no transpose back to NCHW);
    the transposed convolutions become matmuls and LayerNorm2d (a norm over channels) becomes
    a plain layer_norm over the last axis, which ONNX Runtime runs as one fused kernel instead
    of a dozen elementwise NCHW ops. Every layer after the first is per pixel, so the pixels
    stay in the order the matmuls write them and only the small [B, masks, 256, 256] result is
    put in image order. Same arithmetic as the NCHW modules, in a different summation order.
    """
    import torch.nn.functional as F

    conv1, norm, act1, conv2, act2 = md.output_upscaling
    batch = src.shape[0]
    x = _transposed_conv_rows(conv1, src.reshape(-1, EMBED_DIM))
    x = act1(F.layer_norm(x, (int(norm.weight.shape[0]),), norm.weight, norm.bias, norm.eps))
    x = act2(_transposed_conv_rows(conv2, x))  # [B * 64*64 * 2*2 * 2*2, C/8]
    rows = x.reshape(batch, -1, int(conv2.weight.shape[1]))
    masks: torch.Tensor = hyper_in @ rows.transpose(1, 2)  # [B, masks, 65536]
    # Row (h, w, i1, j1, i2, j2) is pixel (4h + 2 i1 + i2, 4w + 2 j1 + j2) of the 256x256 grid:
    # i1 moves before w, then i2 before (w, j1). Two simple transposes run in 0.6x the time of
    # one 7-axis permutation on ONNX Runtime's CPU kernels.
    side = EMBED_SIZE
    masks = masks.reshape(-1, side, 2, 8).transpose(1, 2)  # [B*masks*h, i1, w, (j1, i2, j2)]
    masks = masks.reshape(-1, 2 * side, 2, 2).transpose(1, 2)  # [B*masks*h*i1, i2, (w, j1), j2]
    return masks.reshape(batch, -1, 4 * side, 4 * side)


def decoder_module(sam: Sam) -> torch.nn.Module:
    """The batched decoder as a torch module (what is exported; also handy for debugging)."""
    import torch

    prompt_encoder = sam.prompt_encoder
    mask_decoder = sam.mask_decoder

    class SamDecoderOnnx(torch.nn.Module):
        image_pe: torch.Tensor
        mask_decoder: Any  # segment_anything is untyped; attribute access is checked by tests
        prompt_encoder: Any

        def __init__(self) -> None:
            super().__init__()
            self.prompt_encoder = prompt_encoder
            self.mask_decoder = mask_decoder
            self.register_buffer("image_pe", prompt_encoder.get_dense_pe().detach().clone())

        def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            # As SamOnnxModel._embed_points: padding points (label -1) become not_a_point,
            # labels 0..3 add the matching learned embedding (bg, fg, box corners).
            coords = (coords + 0.5) / IMAGE_SIZE
            embedding: torch.Tensor = self.prompt_encoder.pe_layer._pe_encoding(coords)
            labels = labels.unsqueeze(-1).expand_as(embedding)
            embedding = embedding * (labels != -1)
            embedding = embedding + self.prompt_encoder.not_a_point_embed.weight * (labels == -1)
            for i in range(self.prompt_encoder.num_point_embeddings):
                embedding = embedding + self.prompt_encoder.point_embeddings[i].weight * (labels == i)
            return embedding

        def _embed_masks(self, mask_input: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
            no_mask: torch.Tensor = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            has_mask = has_mask.view(-1, 1, 1, 1)
            dense: torch.Tensor = self.prompt_encoder.mask_downscaling(mask_input)
            return has_mask * dense + (1 - has_mask) * no_mask

        def forward(
            self,
            image_embeddings: torch.Tensor,  # [B, 256, 64, 64]
            point_coords: torch.Tensor,  # [B, P, N, 2]
            point_labels: torch.Tensor,  # [B, P, N]
            mask_input: torch.Tensor,  # [B, P, 1, 256, 256]
            has_mask_input: torch.Tensor,  # [B, P]
            multimask_output: torch.Tensor,  # [B, 1] bool; element [0, 0] decides
        ) -> tuple[torch.Tensor, torch.Tensor]:
            batch, prompts, points = point_labels.shape
            flat = batch * prompts
            sparse = self._embed_points(
                point_coords.reshape(flat, points, 2), point_labels.reshape(flat, points)
            )
            dense = self._embed_masks(
                mask_input.reshape(flat, 1, LOW_RES_SIZE, LOW_RES_SIZE), has_mask_input.reshape(flat)
            )
            # predict_masks, with each prompt's own image embedding instead of repeat_interleave.
            md = self.mask_decoder
            output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
            tokens = torch.cat((output_tokens.unsqueeze(0).expand(flat, -1, -1), sparse), dim=1)
            # Broadcasting instead of materialised copies: the embedding meets each of its
            # prompts' dense embeddings in the add, and the constant positional encoding is
            # broadcast inside the transformer (where it is only ever added).
            grid = (EMBED_DIM, EMBED_SIZE, EMBED_SIZE)
            src = image_embeddings.unsqueeze(1) + dense.reshape(batch, prompts, *grid)
            hs, src = md.transformer(src.reshape(flat, *grid), self.image_pe, tokens)
            return _masks_and_scores(md, hs, src, multimask_output, batch, prompts)

    return SamDecoderOnnx().eval()


def _masks_and_scores(
    md: Any, hs: torch.Tensor, src: torch.Tensor, multimask_output: torch.Tensor, batch: int, prompts: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``predict_masks`` after the transformer, and MaskDecoder.forward's mask selection."""
    import torch

    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + md.num_mask_tokens), :]
    hyper_in = torch.stack(
        [md.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(md.num_mask_tokens)],
        dim=1,
    )
    masks = _masks_channels_last(md, src, hyper_in)
    iou_pred = md.iou_prediction_head(iou_token_out)
    # Selection decided at run time: tokens 1..3 when multimask, token 0 otherwise. nonzero()
    # gives the indices as a tensor, so the choice (and K) stays data-dependent in the graph
    # instead of being traced into a constant.
    token_ids = torch.arange(md.num_mask_tokens, device=masks.device)
    multimask = multimask_output.reshape(-1)[0]
    # (bool logic rather than Where: ONNX Runtime's CPU Where has no bool kernel)
    keep = ((token_ids >= 1) & multimask) | ((token_ids == 0) & ~multimask)
    selected = torch.nonzero(keep).reshape(-1)
    masks = masks.index_select(1, selected)
    iou_pred = iou_pred.index_select(1, selected)
    kept = selected.shape[0]
    return (
        masks.reshape(batch, prompts, kept, LOW_RES_SIZE, LOW_RES_SIZE),
        iou_pred.reshape(batch, prompts, kept),
    )


# ----------------------------------------------------------------- server-held image features
#
# Without a mask prompt, SAM's dense prompt embedding is the constant ``no_mask_embed``, so the
# transformer's image tokens entering layer 0 depend on the image alone, and so do three of
# layer 0's projections of them (token-to-image keys and values, image-to-token queries).
# ``sam_session`` computes them once per embedding with the ``image_features`` graph and feeds
# them to the ``prompt_decoder`` graph on every click without a mask; a click with a mask runs
# the full decoder. Same weights; the prompt decoder's cross attentions are reassociated
# (``reassociated_attention``), which ``verify`` holds to the full decoder.


def image_features_module(sam: Sam) -> torch.nn.Module:
    """[1, 256, 64, 64] embedding -> the image tokens entering layer 0 and layer 0's projections."""
    import torch

    class ImageFeaturesOnnx(torch.nn.Module):
        image_pe: torch.Tensor
        prompt_encoder: Any
        layer: Any

        def __init__(self) -> None:
            super().__init__()
            self.prompt_encoder = sam.prompt_encoder
            self.layer = sam.mask_decoder.transformer.layers[0]
            self.register_buffer("image_pe", sam.prompt_encoder.get_dense_pe().detach().clone())

        def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
            no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            keys = (image_embeddings + no_mask).flatten(2).permute(0, 2, 1)  # [1, 4096, C]
            keys_pe = keys + self.image_pe.flatten(2).permute(0, 2, 1)
            to_image, to_token = self.layer.cross_attn_token_to_image, self.layer.cross_attn_image_to_token
            return (
                keys,
                separate_heads(to_image, to_image.k_proj(keys_pe)).transpose(2, 3),
                separate_heads(to_image, to_image.v_proj(keys)),
                to_token.q_proj(keys_pe),
            )

    return ImageFeaturesOnnx().eval()


def prompt_decoder_module(sam: Sam) -> torch.nn.Module:
    """The decoder for mask-free prompts on one image, starting from ``image_features``' outputs.

    ``TwoWayTransformer.forward`` written out: layer 0 (``skip_first_layer_pe``, as SAM's first
    layer has) on the precomputed projections, then the later layers and the final attention,
    their cross attentions reassociated; the rest is the modules' own.
    """
    import torch

    full = decoder_module(sam)

    class PromptDecoderOnnx(torch.nn.Module):
        full: Any  # the full decoder module: its submodules and buffers, nothing copied

        def __init__(self) -> None:
            super().__init__()
            self.full = full

        def forward(
            self,
            image_keys: torch.Tensor,  # [1, 4096, C]
            to_image_keys_t: torch.Tensor,  # [1, heads, C/2/heads, 4096]
            to_image_values: torch.Tensor,  # [1, heads, 4096, C/2/heads]
            to_token_queries: torch.Tensor,  # [1, 4096, C/2]
            point_coords: torch.Tensor,  # [1, P, N, 2]
            point_labels: torch.Tensor,  # [1, P, N]
            multimask_output: torch.Tensor,  # [1, 1] bool
        ) -> tuple[torch.Tensor, torch.Tensor]:
            md, transformer = self.full.mask_decoder, self.full.mask_decoder.transformer
            layer = transformer.layers[0]
            _, prompts, points = point_labels.shape
            sparse = self.full._embed_points(point_coords.reshape(prompts, points, 2), point_labels[0])
            output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
            tokens = torch.cat((output_tokens.unsqueeze(0).expand(prompts, -1, -1), sparse), dim=1)
            key_pe = self.full.image_pe.flatten(2).permute(0, 2, 1)

            queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))
            attn_out = tokens_to_projected_image(
                layer.cross_attn_token_to_image, queries + tokens, to_image_keys_t, to_image_values
            )
            queries = layer.norm2(queries + attn_out)
            queries = layer.norm3(queries + layer.mlp(queries))
            to_token = layer.cross_attn_image_to_token
            attn_out = projected_image_to_tokens(to_token, to_token_queries, queries + tokens, queries)
            keys = layer.norm4(image_keys + attn_out)

            for block in transformer.layers[1:]:
                q = queries + tokens
                queries = block.norm1(queries + block.self_attn(q=q, k=q, v=queries))
                keys_pe = keys + key_pe
                attn_out = tokens_to_image(block.cross_attn_token_to_image, queries + tokens, keys_pe, keys)
                queries = block.norm2(queries + attn_out)
                queries = block.norm3(queries + block.mlp(queries))
                attn_out = image_to_tokens(
                    block.cross_attn_image_to_token, keys_pe, queries + tokens, queries
                )
                keys = block.norm4(keys + attn_out)
            attn_out = tokens_to_image(
                transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys
            )
            hs = transformer.norm_final_attn(queries + attn_out)
            return _masks_and_scores(md, hs, keys, multimask_output, 1, prompts)

    return PromptDecoderOnnx().eval()


def example_decoder_inputs(batch: int = 1, prompts: int = 1, points: int = 2) -> tuple[torch.Tensor, ...]:
    import torch

    return (
        torch.randn(batch, EMBED_DIM, EMBED_SIZE, EMBED_SIZE),
        torch.randint(0, IMAGE_SIZE, (batch, prompts, points, 2)).to(torch.float32),
        torch.ones(batch, prompts, points),
        torch.zeros(batch, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        torch.zeros(batch, prompts),
        torch.ones(batch, 1, dtype=torch.bool),
    )


def export_decoder(sam: Sam, path: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32") -> Path:
    dynamic_axes: dict[str, dict[int, str]] = {
        IMAGE_EMBEDDINGS: {0: "batch"},
        "point_coords": {0: "batch", 1: "prompts", 2: "points"},
        "point_labels": {0: "batch", 1: "prompts", 2: "points"},
        "mask_input": {0: "batch", 1: "prompts"},
        "has_mask_input": {0: "batch", 1: "prompts"},
        "multimask_output": {0: "batch"},
        LOW_RES_MASKS: {0: "batch", 1: "prompts", 2: "masks"},
        IOU_PREDICTIONS: {0: "batch", 1: "prompts", 2: "masks"},
    }
    # Export with B=2, P=2 so no dimension is specialised to 1 by the tracer.
    return export_onnx(
        decoder_module(sam),
        example_decoder_inputs(batch=2, prompts=2, points=3),
        path,
        input_names=DECODER_INPUTS,
        output_names=DECODER_OUTPUTS,
        dynamic_axes=dynamic_axes,
        opset=opset,
        precision=precision,
        graph_pass=allow_zero_sized_reshapes,
    )


def export_session_decoder(
    sam: Sam, directory: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32"
) -> list[Path]:
    """``image_features`` and ``prompt_decoder`` (see above) into ``directory``."""
    import torch

    embedding = torch.randn(1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE)
    with torch.no_grad():
        features = tuple(image_features_module(sam)(embedding))
    features_path = export_onnx(
        image_features_module(sam),
        (embedding,),
        directory / IMAGE_FEATURES_FILE,
        input_names=(IMAGE_EMBEDDINGS,),
        output_names=IMAGE_FEATURE_NAMES,
        dynamic_axes={},
        opset=opset,
        precision=precision,
    )
    _, coords, labels, _, _, multimask = example_decoder_inputs(batch=1, prompts=2, points=3)
    prompts_axes = {"point_coords": {1: "prompts", 2: "points"}, "point_labels": {1: "prompts", 2: "points"}}
    prompt_path = export_onnx(
        prompt_decoder_module(sam),
        (*features, coords, labels, multimask),
        directory / PROMPT_DECODER_FILE,
        input_names=PROMPT_DECODER_INPUTS,
        output_names=DECODER_OUTPUTS,
        dynamic_axes={
            **prompts_axes,
            LOW_RES_MASKS: {1: "prompts", 2: "masks"},
            IOU_PREDICTIONS: {1: "prompts", 2: "masks"},
        },
        opset=opset,
        precision=precision,
        graph_pass=allow_zero_sized_reshapes,
    )
    return [features_path, prompt_path]


def allow_zero_sized_reshapes(model: onnx.ModelProto) -> None:
    """Let every computed Reshape produce zero-sized dimensions (``allowzero=1``).

    A prompt of ``mask_input`` alone has no points (N = 0), which SamPredictor accepts. ONNX
    Reshape reads a 0 in its shape as "copy this dimension from the input" unless
    ``allowzero`` is set, so the traced ``reshape(flat, points, 2)`` would turn N = 0 into 1
    and fail. Shapes computed at run time never mean "copy", so they get ``allowzero=1``;
    constant shapes are left alone (a constant 0 there may well mean "copy").
    """
    from onnx import helper

    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        current = [a for a in node.attribute if a.name == "allowzero"]
        if current:
            current[0].i = 1
        else:
            node.attribute.append(helper.make_attribute("allowzero", 1))
