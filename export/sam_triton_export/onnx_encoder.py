"""The ``sam_encoder`` graph: uint8 HWC image in, SAM image embedding out.

SamPredictor normalises the resized image and only then zero-pads it to 1024x1024, so the
padded region is 0 *after* normalisation. The client sends the zero-padded uint8 image (a
fixed shape, so requests batch) plus the pre-padding size; the graph normalises and then
zeroes everything outside ``input_size``, which reproduces the reference exactly. Global
attention is computed a band of query rows at a time (:mod:`sam_triton_export.banded_attention`:
the same sums, a quarter of the activation memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sam_triton_common.contract import IMAGE, IMAGE_EMBEDDINGS, INPUT_SIZE

from sam_triton_export.banded_attention import banded_global_attention
from sam_triton_export.model_types import IMAGE_SIZE
from sam_triton_export.onnx_common import DEFAULT_OPSET, export_onnx

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

ENCODER_INPUTS = (IMAGE, INPUT_SIZE)
ENCODER_OUTPUTS = (IMAGE_EMBEDDINGS,)


def _encoder_module(sam: Sam) -> torch.nn.Module:
    import torch

    class SamEncoderOnnx(torch.nn.Module):
        pixel_mean: torch.Tensor
        pixel_std: torch.Tensor
        grid: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = sam.image_encoder
            self.register_buffer("pixel_mean", sam.pixel_mean.detach().clone().view(1, 3, 1, 1))
            self.register_buffer("pixel_std", sam.pixel_std.detach().clone().view(1, 3, 1, 1))
            self.register_buffer("grid", torch.arange(IMAGE_SIZE, dtype=torch.int32))

        def forward(self, image: torch.Tensor, input_size: torch.Tensor) -> torch.Tensor:
            # Cast first: TensorRT's ONNX parser accepts UINT8 only as a graph input or output,
            # so a Transpose of the uint8 image would fail the plan build (the values are equal).
            x = image.to(torch.float32).permute(0, 3, 1, 2)
            x = (x - self.pixel_mean) / self.pixel_std
            rows = self.grid.view(1, -1, 1) < input_size[:, 0].view(-1, 1, 1)
            cols = self.grid.view(1, 1, -1) < input_size[:, 1].view(-1, 1, 1)
            inside = (rows & cols).unsqueeze(1).to(torch.float32)
            out: torch.Tensor = self.image_encoder(x * inside)
            return out

    return SamEncoderOnnx().eval()


def export_encoder(sam: Sam, path: Path, *, opset: int = DEFAULT_OPSET, precision: str = "fp32") -> Path:
    import torch

    image = torch.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8)
    input_size = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]], dtype=torch.int32)
    with banded_global_attention(sam.image_encoder):
        return export_onnx(
            _encoder_module(sam),
            (image, input_size),
            path,
            input_names=ENCODER_INPUTS,
            output_names=ENCODER_OUTPUTS,
            dynamic_axes={name: {0: "batch"} for name in ENCODER_INPUTS + ENCODER_OUTPUTS},
            opset=opset,
            precision=precision,
        )
