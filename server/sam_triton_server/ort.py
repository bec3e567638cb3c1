"""ONNX Runtime sessions with the best execution provider this machine has.

Preference: TensorRT, then CUDA, then CPU. Which one was chosen is logged at load, because
"it silently ran on the CPU" is the most common surprise when serving on a GPU box.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnxruntime

LOGGER = logging.getLogger("sam_triton_server.ort")

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


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
    logger: logging.Logger | None = None,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on the best providers; thread counts of 0 mean ONNX Runtime's default.

    ``SAM_TRITON_ORT_PROVIDERS`` (comma-separated) overrides the choice, e.g. to force CPU.
    """
    import onnxruntime as ort

    log = logger or LOGGER
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path} (run `sam-triton export` first)")
    override = os.environ.get("SAM_TRITON_ORT_PROVIDERS")
    if providers is None:
        providers = override.split(",") if override else choose_providers(ort.get_available_providers())
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(model_path),
        sess_options=options,
        providers=[(p, _provider_options(p, model_path, device_id)) for p in providers],
    )
    active = session.get_providers()
    log.info("onnxruntime session for %s uses %s", model_path, ", ".join(active))
    if active[0] == "CPUExecutionProvider" and any(p != "CPUExecutionProvider" for p in providers):
        log.warning("GPU execution providers were requested but %s runs on the CPU", model_path)
    return session
