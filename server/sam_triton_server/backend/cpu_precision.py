"""The precision an image encoder computes in on the CPU, and whether this CPU can run it.

``fp32`` (the default) is exact against the reference. ``bf16`` keeps the same fp32 graph and
fp32 tensors in and out; OpenVINO's CPU plugin then computes the matrix products in bfloat16
(``INFERENCE_PRECISION_HINT=bf16``), which on AVX-512 BF16 halves the encoder's CPU time
(BENCHMARKS.md, "bf16 encoder"). A CPU without bf16 instructions would not run it faster (the
runtime falls back or emulates), so bf16 there is refused with a message, never served slowly.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

FP32, BF16 = "fp32", "bf16"
CPU_PRECISIONS = (FP32, BF16)
# The encoder config's parameter that carries it (absent: fp32).
PRECISION_PARAMETER = "inference_precision"
# /proc/cpuinfo flags of the instructions OpenVINO's CPU plugin runs bf16 matrix products with:
# AVX-512 BF16 (Intel Cooper Lake and later Xeons, AMD Zen 4 and later) or AMX (Sapphire Rapids+).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# OpenVINO's names for the precisions.
OPENVINO_NAMES = {FP32: "f32", BF16: "bf16"}


class PrecisionUnsupported(RuntimeError):
    """The precision asked for cannot run on this machine (or runtime); the message says why."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def unsupported_reason(precision: str, flags: Collection[str]) -> str | None:
    """Why ``precision`` cannot run on a CPU with ``flags``, or None when it can."""
    if precision not in CPU_PRECISIONS:
        return f"precision must be one of {', '.join(CPU_PRECISIONS)}, got {precision!r}"
    if precision == BF16 and not any(flag in flags for flag in BF16_FLAGS):
        return (
            f"this CPU has no bf16 instructions (none of the CPU flags {', '.join(BF16_FLAGS)}), "
            "so a bf16 encoder would not run faster than fp32 here: serve the fp32 export "
            "(export --precision fp32, the default), or use a CPU with AVX-512 BF16 or AMX"
        )
    return None


def require_cpu_precision(precision: str, flags: Collection[str] | None = None) -> None:
    """Raise :class:`PrecisionUnsupported` when ``precision`` cannot run on this CPU (``flags``:
    this machine's, read from /proc/cpuinfo, unless given)."""
    reason = unsupported_reason(precision, cpu_flags() if flags is None else flags)
    if reason is not None:
        raise PrecisionUnsupported(reason)
