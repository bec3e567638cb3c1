"""What a repository's TensorRT plans were built for, and whether this machine can serve them.

A plan only loads under the TensorRT version that built it, and is built for one GPU model
(TensorRT's default hardware compatibility). ``sam-triton export --target tensorrt`` records
both in export.json (:data:`PLAN_BUILD_KEY`); ``export --if-changed`` rebuilds plans recorded
for another machine, and ``sam-triton serve`` refuses them with the command that rebuilds them,
where Triton would fail to load them (and a container would restart forever).

The GPU is read from the CUDA driver (``libcuda.so.1``, present wherever a GPU is usable) with
ctypes, so this needs no CUDA Python package.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sam_triton_common.contract import exported_models, read_export_info

PLAN_BUILD_KEY = "tensorrt_build"
_CC_MAJOR, _CC_MINOR = 75, 76  # CUdevice_attribute: compute capability


def cuda_device(index: int = 0) -> dict[str, str] | None:
    """``{"gpu": name, "compute_capability": "8.9"}`` of CUDA device ``index``, or None where the
    driver or the device is missing."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    calls: tuple[Callable[[], int], ...] = (
        lambda: int(cuda.cuInit(0)),
        lambda: int(cuda.cuDeviceGet(ctypes.byref(device), index)),
        lambda: int(cuda.cuDeviceGetName(name, len(name), device)),
        lambda: int(cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)),
        lambda: int(cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)),
    )
    if any(call() != 0 for call in calls):  # CUDA_SUCCESS is 0
        return None
    return {"gpu": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"}


def current_build_environment(device: int = 0) -> dict[str, str] | None:
    """What a plan built here now would be built for, or None where TensorRT's Python package or a
    GPU is missing (then nothing can be said about a plan)."""
    try:
        import tensorrt
    except ImportError:
        return None
    gpu = cuda_device(device)
    return None if gpu is None else {"tensorrt": str(tensorrt.__version__), **gpu}


def _describe(environment: dict[str, Any]) -> str:
    return (
        f"TensorRT {environment.get('tensorrt', '?')} on {environment.get('gpu', '?')} "
        f"(compute capability {environment.get('compute_capability', '?')})"
    )


def plans_mismatch(built: Any, current: dict[str, str]) -> str | None:
    """None when plans recorded as ``built`` (export.json's :data:`PLAN_BUILD_KEY`) suit
    ``current``; else a sentence saying what differs."""
    if not isinstance(built, dict):
        return f"TensorRT plans that do not record what they were built for, on {_describe(current)}"
    if all(built.get(key) == value for key, value in current.items()):
        return None
    return f"TensorRT plans built for {_describe(built)}, but this machine has {_describe(current)}"


def stale_plans_reason(repository: Path, current: dict[str, str] | None = None) -> str | None:
    """None when ``repository`` holds no TensorRT plans, or plans built for ``current`` (default:
    this machine), or when this machine cannot be probed; else why Triton would refuse them and
    how to rebuild them (the first such model's, of a repository of several)."""
    for model in exported_models(repository):
        info = read_export_info(repository, model)
        if info is None or info.get("target") != "tensorrt":
            continue
        current = current if current is not None else current_build_environment()
        mismatch = None if current is None else plans_mismatch(info.get(PLAN_BUILD_KEY), current)
        if mismatch is None:
            continue
        name = f" --name {model}" if model else ""
        return (
            f"{repository} holds {mismatch}: Triton would refuse to load them. Rebuild them here: "
            f"sam-triton export --model-type {info.get('model_type', 'MODEL')} --checkpoint CHECKPOINT "
            f"--repository {repository}{name} --target tensorrt --precision {info.get('precision', 'fp32')} "
            "--if-changed (docker/entrypoint.sh and the Kubernetes export init container do this at "
            "every start)"
        )
    return None
