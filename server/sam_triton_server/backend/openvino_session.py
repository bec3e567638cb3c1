"""An exported ONNX graph run by OpenVINO on the CPU, behind ONNX Runtime's ``run`` interface.

Why: on the 2-core Zen 4 machines this project measures on, OpenVINO's CPU plugin runs the
ViT image encoder in ~0.7x of ONNX Runtime's time, at fp32 and within 1e-5 of it (see
BENCHMARKS.md). The decoder is not faster under OpenVINO, so it stays on ONNX Runtime.

Two choices, both measured:

- fp32 unless bf16 is asked for (``export --precision bf16``,
  :mod:`sam_triton_server.backend.cpu_precision`). OpenVINO's CPU plugin would otherwise pick
  bf16 by itself on CPUs with AVX512_BF16, which is outside docs/serving/export.md's fp32
  tolerances; the precision compiled is read back from the runtime and must be the one asked.
- The graph is compiled for batch 1 and a batch is run one item at a time. A static shape was
  ~10% faster than the dynamic-batch compilation, and a dynamic batch of 2 took longer than two
  single runs: one encoder run already keeps every core busy, so batching on the CPU only adds
  memory traffic. Every input and output of the graphs this is used for is batch-major.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sam_triton_server.backend.cpu_precision import (
    FP32,
    OPENVINO_NAMES,
    PrecisionUnsupported,
    require_cpu_precision,
)

Array = npt.NDArray[Any]

PROVIDER_NAME = "OpenVINO-CPU"


class OpenVinoSession:
    """The subset of ``onnxruntime.InferenceSession`` the models use: ``run`` and ``get_providers``."""

    def __init__(self, model_path: Path, *, threads: int = 0, precision: str = FP32) -> None:
        import openvino as ov

        require_cpu_precision(precision)
        core = ov.Core()
        model = core.read_model(str(model_path))
        model.reshape({port.get_any_name(): _batch_one(port.get_partial_shape()) for port in model.inputs})
        wanted = OPENVINO_NAMES[precision]
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": wanted, "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, "CPU", config)
        compiled = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if compiled != wanted:  # the plugin falls back silently where it cannot
            raise PrecisionUnsupported(
                f"OpenVINO {ov.__version__} compiled {model_path.name} for {compiled}, not {wanted}: "
                f"this CPU cannot run {precision} there"
            )
        self.precision = precision
        """What the runtime computes in, as it reports it after compiling."""
        self._request = self._compiled.create_infer_request()
        self._input_names = [port.get_any_name() for port in self._compiled.inputs]
        # An infer request runs one inference at a time; the Python backend calls a model
        # instance serially, but in-process users (bench baselines, verify) may share one.
        self._lock = threading.Lock()

    def get_providers(self) -> list[str]:
        return [PROVIDER_NAME]

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, Array]) -> list[Array]:
        missing = [name for name in self._input_names if name not in feed]
        if missing:
            raise ValueError(f"missing input {missing[0]!r}")
        ports = (
            [self._compiled.output(name) for name in output_names]
            if output_names
            else list(self._compiled.outputs)
        )
        batch = len(feed[self._input_names[0]])
        pieces: list[list[Array]] = [[] for _ in ports]
        with self._lock:
            for item in range(batch):
                result = self._request.infer(
                    {name: np.ascontiguousarray(feed[name][item : item + 1]) for name in self._input_names},
                    share_outputs=False,
                )
                for piece, port in zip(pieces, ports, strict=True):
                    piece.append(result[port])
        return [np.concatenate(piece) for piece in pieces]


def _batch_one(shape: Any) -> list[int]:
    dims = [1] + [dim.get_length() if dim.is_static else -1 for dim in list(shape)[1:]]
    if -1 in dims:
        raise ValueError(f"OpenVinoSession needs static dimensions after the batch, got {shape}")
    return dims
