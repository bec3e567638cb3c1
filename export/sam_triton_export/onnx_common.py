"""What the encoder and decoder exports share: the exporter call, fp16, and how files are saved.

The exporter is deliberately the TorchScript-based one (``dynamo=False``): it handles SAM's
data-dependent window padding and the decoder's runtime mask selection, produces plain
opset-17 graphs that ONNX Runtime, Triton's onnxruntime backend and TensorRT all accept,
and is what segment-anything's own ``scripts/export_onnx_model.py`` uses.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import torch

DEFAULT_OPSET = 17
# protobuf cannot serialise a single message over 2 GiB: bigger graphs (vit_h fp32) keep their
# weights in one side file, ``model.onnx.data``, next to ``model.onnx``.
_PROTOBUF_LIMIT = 2**31 - 1
PRECISIONS = ("fp32", "fp16")


def export_onnx(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int,
    precision: str,
    graph_pass: Callable[[onnx.ModelProto], None] | None = None,
) -> Path:
    """Export ``module`` to ``path`` (fp32 graph, or fp16 compute with fp32 inputs/outputs).

    ``graph_pass`` edits the traced graph in place before it is saved, for what the tracer
    cannot express.
    """
    import onnx
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Export into a scratch directory first: the legacy exporter scatters one file per
    # weight when a graph passes 2 GiB, and a failed export must not leave half a model.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints
            torch.onnx.export(
                module,
                args,
                str(raw),
                dynamo=False,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(str(raw))
        if graph_pass is not None:
            graph_pass(model)
        if precision == "fp16":
            model = _to_fp16(model)
        save_onnx(model, path)
    return path


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    # keep_io_types: every target keeps the FP32 tensor contract; only the compute is halved.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted: onnx.ModelProto = convert_float_to_float16(model, keep_io_types=True)
    return converted


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    import onnx

    data_path = path.with_name(path.name + ".data")
    data_path.unlink(missing_ok=True)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_path.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def onnx_files(path: Path) -> list[Path]:
    """``path`` and its external-data file when there is one."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


if TYPE_CHECKING:
    import onnx
