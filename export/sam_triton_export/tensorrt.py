"""TensorRT plans from the exported ONNX files, through TensorRT's Python API.

Only possible where the ``tensorrt`` package and a CUDA GPU exist (the NGC container);
everywhere else ``tensorrt_unavailable_reason`` says why, before any slow export work starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sam_triton_common.contract import IMAGE, IMAGE_EMBEDDINGS, INPUT_SIZE

from sam_triton_export.model_types import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE

if TYPE_CHECKING:
    from sam_triton_export.repository import RepositoryOptions

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)


class TensorRTUnavailable(RuntimeError):
    pass


def tensorrt_unavailable_reason() -> str | None:
    """None when plans can be built here, else a sentence saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        return (
            "the tensorrt Python package is not installed; build TensorRT plans inside the NGC "
            "container (docker/), or export --target onnxruntime / python-onnxruntime"
        )
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # TensorRT raises a bare error/TypeError when no CUDA device exists
        return f"TensorRT {trt.__version__} is installed but cannot use a GPU here ({e})"
    return None


def encoder_profile(max_batch: int) -> Profile:
    def shapes(b: int) -> tuple[Shape, Shape]:
        return (b, IMAGE_SIZE, IMAGE_SIZE, 3), (b, 2)

    lo, opt, hi = shapes(1), shapes(min(2, max_batch)), shapes(max_batch)
    return {IMAGE: (lo[0], opt[0], hi[0]), INPUT_SIZE: (lo[1], opt[1], hi[1])}


def decoder_profile(max_batch: int, max_prompts: int, max_points: int) -> Profile:
    def shapes(b: int, p: int, n: int) -> dict[str, Shape]:
        return {
            IMAGE_EMBEDDINGS: (b, EMBED_DIM, EMBED_SIZE, EMBED_SIZE),
            "point_coords": (b, p, n, 2),
            "point_labels": (b, p, n),
            "mask_input": (b, p, 1, LOW_RES_SIZE, LOW_RES_SIZE),
            "has_mask_input": (b, p),
            "multimask_output": (b, 1),
        }

    # No points is a real prompt: mask_input alone (SamPredictor accepts it; the SDK sends N = 0).
    lo, opt, hi = shapes(1, 1, 0), shapes(1, 1, 2), shapes(max_batch, max_prompts, max_points)
    return {name: (lo[name], opt[name], hi[name]) for name in lo}


def plan_profiles(options: RepositoryOptions) -> dict[str, Profile]:
    """Each plan's profile, its batch range read from the config Triton loads it with: the
    tensorrt backend refuses a config whose max_batch_size the plan cannot take, and TensorRT
    sizes a plan's activation memory for the profile's largest shapes."""
    from sam_triton_export.repository import DECODER, ENCODER, repository_files

    files = repository_files(options)

    def max_batch(model: str) -> int:
        found = re.search(rb"^max_batch_size: (\d+)$", files[f"{model}/config.pbtxt"], re.MULTILINE)
        assert found is not None, f"{model}/config.pbtxt has no max_batch_size"
        return int(found.group(1))

    return {
        ENCODER: encoder_profile(max_batch(ENCODER)),
        DECODER: decoder_profile(max_batch(DECODER), options.max_prompts, options.max_points),
    }


def build_plan(
    onnx_path: Path, plan_path: Path, profile: Profile, *, fp16: bool, workspace_gib: float = 4.0
) -> Path:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # also reads model.onnx.data
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    else:  # TensorRT enables TF32 by default (10-bit mantissa matmuls): fp32 means fp32 here
        config.clear_flag(trt.BuilderFlag.TF32)
    optimization = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        optimization.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return plan_path
