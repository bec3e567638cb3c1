"""Inference sessions for the exported ONNX files, on the best runtime this machine has.

Preference: ONNX Runtime's TensorRT, then CUDA execution provider. With neither (a CPU-only
machine), each graph runs on its ``cpu_runtime``: ONNX Runtime's CPU provider, or OpenVINO
(:mod:`sam_triton_server.backend.openvino_session`), whichever measured faster for that graph
(:data:`CPU_RUNTIMES`). What was chosen is logged at load, because "it silently ran on the
CPU" is the most common surprise when serving on a GPU box.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy.typing as npt

from sam_triton_server.backend.cpu_precision import FP32, PrecisionUnsupported, require_cpu_precision

LOGGER = logging.getLogger("sam_triton_server.backend.ort")

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PREFERRED_PROVIDERS[:2]

CpuRuntime = Literal["onnxruntime", "openvino"]
CPU_RUNTIME_CHOICES: tuple[CpuRuntime, ...] = ("onnxruntime", "openvino")
# Which runtime runs each graph on a CPU-only machine, by measurement (BENCHMARKS.md): OpenVINO
# runs the ViT encoder in ~0.7x of ONNX Runtime's time; the small dynamic-shape decoder is not
# faster there. The exporter writes these into the configs' ``cpu_runtime`` parameters.
CPU_RUNTIMES: dict[str, CpuRuntime] = {"encoder": "openvino", "decoder": "onnxruntime"}
# Overrides every graph's cpu_runtime, for A/B runs of one against the other.
CPU_RUNTIME_ENV = "SAM_TRITON_CPU_RUNTIME"
# Set (to 1) where a GPU is promised (the GPU container, the gpu overlay): a session that would
# run on the CPU there fails the model's load instead of serving slowly with a log line.
REQUIRE_GPU_ENV = "SAM_TRITON_REQUIRE_GPU"
# Threads per session where a config says 0 ("the runtime's default"): both runtimes default to
# every core of the machine, which in a container is the node's, not the pod's share.
THREADS_ENV = "SAM_TRITON_INTRA_OP_THREADS"


class GpuUnavailable(RuntimeError):
    """A GPU was required (``SAM_TRITON_REQUIRE_GPU=1``) but onnxruntime cannot use one."""


class Session(Protocol):
    """What the models and baselines use of a session: ONNX Runtime's ``run`` signature."""

    def run(self, output_names: Any, input_feed: Any) -> list[npt.NDArray[Any]]: ...

    def get_providers(self) -> list[str]: ...


def _provider_options(provider: str, model_path: Path, device_id: int) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider":
        # Engines take minutes to build: cache them next to the model so a restart reuses them.
        return {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(model_path.parent / "trt_cache"),
        }
    if provider == "CUDAExecutionProvider":
        return {"device_id": device_id}
    return {}


def choose_providers(available: Sequence[str], disabled: Sequence[str] = ()) -> list[str]:
    """The preferred providers present in ``available``, best first; CPU is always last."""
    chosen = [p for p in PREFERRED_PROVIDERS if p in available and p not in disabled]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def create_session(
    model_path: Path | str,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device_id: int = 0,
    providers: Sequence[str] | None = None,
    cpu_runtime: str = "onnxruntime",
    cpu_precision: str = FP32,
    logger: logging.Logger | None = None,
) -> Session:
    """A session on the best providers; thread counts of 0 mean ``SAM_TRITON_INTRA_OP_THREADS``,
    else the runtime's default.

    ``SAM_TRITON_ORT_PROVIDERS`` (comma-separated) overrides the provider choice, e.g. to force
    CPU; ``SAM_TRITON_CPU_RUNTIME`` overrides ``cpu_runtime``, which only applies when no GPU
    provider is chosen. ``cpu_precision`` other than fp32 (bf16) needs OpenVINO on a CPU that
    runs it (:mod:`sam_triton_server.backend.cpu_precision`): PrecisionUnsupported otherwise.
    """
    import onnxruntime as ort

    log = logger or LOGGER
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path} (run `sam-triton export` first)")
    override = os.environ.get("SAM_TRITON_ORT_PROVIDERS")
    if providers is None:
        providers = override.split(",") if override else choose_providers(ort.get_available_providers())
    cpu_runtime = os.environ.get(CPU_RUNTIME_ENV) or cpu_runtime
    if intra_op_threads <= 0:
        intra_op_threads = int(os.environ.get(THREADS_ENV) or 0)
    if cpu_runtime not in CPU_RUNTIME_CHOICES:
        raise ValueError(f"cpu_runtime must be one of {', '.join(CPU_RUNTIME_CHOICES)}, got {cpu_runtime!r}")
    if not any(p in GPU_PROVIDERS for p in providers):
        _check_gpu_not_required(model_path, providers[0])
    on_cpu = not any(p in GPU_PROVIDERS for p in providers)
    if cpu_precision != FP32:
        _check_cpu_precision(model_path, cpu_precision, cpu_runtime if on_cpu else None, log)
    if cpu_runtime == "openvino" and on_cpu:
        openvino = _openvino_session(model_path, intra_op_threads, cpu_precision, log)
        if openvino is not None:
            return openvino
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session: Session = ort.InferenceSession(
        str(model_path),
        sess_options=options,
        providers=[(p, _provider_options(p, model_path, device_id)) for p in providers],
    )
    active = session.get_providers()
    log.info("onnxruntime session for %s uses %s", model_path, ", ".join(active))
    if active[0] not in GPU_PROVIDERS:  # a GPU provider that failed to load falls back silently
        _check_gpu_not_required(model_path, active[0])
    if active[0] == "CPUExecutionProvider" and any(p != "CPUExecutionProvider" for p in providers):
        log.warning("GPU execution providers were requested but %s runs on the CPU", model_path)
    return session


class MemoryReleasing:
    """A session whose every run ends with ONNX Runtime handing its CPU arena's free memory back.

    The arena keeps the largest working set a session ever needed: right for small frequent
    runs, wrong after a rare huge one (an automatic-mask batch of 64 prompts grows vit_b's
    decoder arena to 2-3 GB, resident for good). One small run through this wrapper after such
    work gives it back. Sessions of other runtimes run as they are.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_providers(self) -> list[str]:
        return self._session.get_providers()

    def run(self, output_names: Any, input_feed: Any) -> list[npt.NDArray[Any]]:
        import onnxruntime as ort

        if not isinstance(self._session, ort.InferenceSession):
            return self._session.run(output_names, input_feed)
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        outputs: list[npt.NDArray[Any]] = self._session.run(output_names, input_feed, options)
        return outputs


def _check_gpu_not_required(model_path: Path, provider: str) -> None:
    if os.environ.get(REQUIRE_GPU_ENV, "0") in ("", "0"):
        return
    import onnxruntime as ort

    raise GpuUnavailable(
        f"{REQUIRE_GPU_ENV} is set but {model_path.name} would run on {provider} (onnxruntime "
        f"{ort.__version__} offers {', '.join(ort.get_available_providers())}): install "
        "onnxruntime-gpu in place of onnxruntime and check that CUDA and cuDNN load (docs/serving/gpu.md, "
        '"First run on a GPU node"), or unset it to serve on the CPU'
    )


def _check_cpu_precision(
    model_path: Path, precision: str, cpu_runtime: str | None, log: logging.Logger
) -> None:
    """A reduced CPU precision runs on OpenVINO only; on a GPU (``cpu_runtime`` None) the graph
    runs at its own precision, said in the log."""
    if cpu_runtime is None:
        log.warning("%s: cpu_precision %s is for the CPU; a GPU runs it as exported", model_path, precision)
        return
    require_cpu_precision(precision)
    if cpu_runtime != "openvino":
        raise PrecisionUnsupported(
            f"{model_path.name}: cpu_precision {precision} runs on OpenVINO only, and this graph's "
            f"cpu_runtime is {cpu_runtime} (is {CPU_RUNTIME_ENV} set?)"
        )
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise PrecisionUnsupported(
            f"{model_path.name}: cpu_precision {precision} runs on OpenVINO, which is not installed ({exc})"
        ) from None


def _openvino_session(model_path: Path, threads: int, precision: str, log: logging.Logger) -> Session | None:
    """OpenVINO's CPU plugin for ``model_path``, or None (logged) when openvino is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        log.warning("cpu_runtime openvino is not installed (%s); %s runs on onnxruntime", exc, model_path)
        return None
    from sam_triton_server.backend.openvino_session import OpenVinoSession

    session = OpenVinoSession(model_path, threads=threads, precision=precision)
    computes = session.precision  # as OpenVINO reports it after compiling
    log.info("openvino session for %s runs on the CPU (%s, batch items one at a time)", model_path, computes)
    return session
