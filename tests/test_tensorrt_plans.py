"""TensorRT plans, checked without TensorRT or a GPU (docs/serving/gpu.md).

export.json records the TensorRT and GPU a repository's plans were built for; ``export
--if-changed`` rebuilds plans of another, ``serve`` refuses them with the command that rebuilds
them (Triton would fail to load them and a container would restart forever); the decoder
profile takes a mask-only prompt (no points); fp32 plans are built without TF32.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

L4 = {"tensorrt": "10.5.0", "gpu": "NVIDIA L4", "compute_capability": "8.9"}
H100 = {"tensorrt": "10.5.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def tensorrt_repository(root: Path, built_for: dict[str, str] | None) -> tuple[Path, dict[str, Any]]:
    """A repository as ``export --target tensorrt`` leaves it (weight files as stand-ins)."""
    from sam_triton_common.contract import write_export_info
    from sam_triton_export.pipeline import EXPORT_FORMAT, weight_files
    from sam_triton_export.repository import RepositoryOptions, write_repository_files
    from sam_triton_server.launcher.plans import PLAN_BUILD_KEY

    options = RepositoryOptions(target="tensorrt")
    write_repository_files(root, options)
    for path in weight_files(root, "tensorrt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")
    info: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        **{"model_type": "vit_b", "weights": {"random_seed": 0}, "precision": "fp16", "target": "tensorrt"},
        **{"opset": 17, "options": options.to_dict(), PLAN_BUILD_KEY: built_for},
    }
    write_export_info(root, info)
    return root, info


def test_if_changed_rebuilds_plans_built_for_another_gpu_or_tensorrt(tmp_path: Path) -> None:
    from sam_triton_export.pipeline import is_up_to_date
    from sam_triton_server.launcher.plans import PLAN_BUILD_KEY

    repository, info = tensorrt_repository(tmp_path, L4)
    assert is_up_to_date(repository, {**info, PLAN_BUILD_KEY: dict(L4)})
    assert not is_up_to_date(repository, {**info, PLAN_BUILD_KEY: H100})
    assert not is_up_to_date(repository, {**info, PLAN_BUILD_KEY: {**L4, "tensorrt": "10.6.0"}})


def test_serve_refuses_stale_plans_with_the_command_that_rebuilds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from sam_triton_server.launcher import plans
    from sam_triton_server.launcher.cli import register

    repository, _ = tensorrt_repository(tmp_path / "repo", L4)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--repository", str(repository)])
    monkeypatch.setattr(plans, "current_build_environment", lambda device=0: H100)
    assert args.handler(args) == 2
    said = capsys.readouterr().err
    assert "built for TensorRT 10.5.0 on NVIDIA L4 (compute capability 8.9)" in said
    assert "this machine has TensorRT 10.5.0 on NVIDIA H100 80GB HBM3" in said
    assert f"--repository {repository} --target tensorrt --precision fp16 --if-changed" in said
    # The same plans on the GPU they were built for, or a machine that cannot be probed: no objection.
    assert plans.stale_plans_reason(repository, current=dict(L4)) is None
    monkeypatch.setattr(plans, "current_build_environment", lambda device=0: None)
    assert plans.stale_plans_reason(repository) is None
    tensorrt_repository(repository, None)  # an export that did not record it
    assert "do not record what they were built for" in (
        plans.stale_plans_reason(repository, current=H100) or ""
    )


def test_the_decoder_profile_takes_what_the_sdk_sends_for_a_mask_only_prompt() -> None:
    from sam_triton._core import decoder_prompt_inputs
    from sam_triton.prompts import Prompt, encode_prompt, group_by_points
    from sam_triton_export.tensorrt import decoder_profile

    profile = decoder_profile(max_batch=8, max_prompts=64, max_points=64)
    mask = np.zeros((1, 256, 256), np.float32)
    for prompt in (Prompt(mask_input=mask), Prompt(point_coords=[[10, 20]], point_labels=[1])):
        (batch,) = group_by_points([encode_prompt(prompt, (480, 640))], max_prompts=64)
        for name, array in decoder_prompt_inputs(batch, multimask_output=True).items():
            low, _, high = profile[name]
            assert all(lo <= n <= hi for lo, n, hi in zip(low, array.shape, high, strict=True)), (
                name,
                array.shape,
            )
    assert profile["point_coords"][0][2] == 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_plans_are_built_without_tf32(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorRT turns TF32 on by default; an fp32 plan clears it. A stand-in for the tensorrt
    module records the builder flags (no TensorRT or GPU here)."""
    import sys
    import types

    from sam_triton_export.tensorrt import build_plan, encoder_profile

    flags: dict[str, bool] = {"TF32": True}  # TensorRT's defaults

    class Config:
        def set_memory_pool_limit(self, *args: Any) -> None: ...
        def set_flag(self, flag: str) -> None:
            flags[flag] = True

        def clear_flag(self, flag: str) -> None:
            flags[flag] = False

        def add_optimization_profile(self, profile: Any) -> None: ...

    class Builder:
        def __init__(self, logger: Any) -> None: ...
        def create_network(self, flags: int) -> Any:
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Any:
            return SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: Any, config: Config) -> bytes:
            return b"plan"

    class Logger:
        WARNING = ERROR = 0

        def __init__(self, level: int) -> None: ...

    trt = types.ModuleType("tensorrt")
    trt.__dict__.update(
        Builder=Builder,
        Logger=Logger,
        OnnxParser=lambda network, logger: SimpleNamespace(parse_from_file=lambda path: True),
        BuilderFlag=SimpleNamespace(FP16="FP16", TF32="TF32"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
    )
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_plan(tmp_path / "model.onnx", tmp_path / "model.plan", encoder_profile(8), fp16=precision == "fp16")
    assert flags == ({"TF32": True, "FP16": True} if precision == "fp16" else {"TF32": False})


def native_configs(target: str, **options: Any) -> dict[str, Any]:
    from sam_triton_export.repository import RepositoryOptions, repository_files

    from tests.test_repository import parse

    files = repository_files(RepositoryOptions(target=target, **options))
    return {
        name.split("/")[0]: parse(text.decode())
        for name, text in files.items()
        if name.endswith("config.pbtxt")
    }


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_the_native_decoder_stays_unbatched_through_the_backends_auto_complete(target: str) -> None:
    """The onnxruntime and tensorrt backends' auto-complete (on by default in Triton) adds
    ``dynamic_batching {}`` to any model whose max_batch_size is above 1 and that names no
    scheduler (onnxruntime_backend onnxruntime.cc, tensorrt_backend model_state.cc). The native
    decoder must not batch (a batch shares row 0's multimask_output), so its max_batch_size is 1,
    and the ensemble's no more than its decoder's (Triton refuses more)."""
    from sam_triton_export.repository import DECODER, ENSEMBLE

    configs = native_configs(target)
    decoder = configs[DECODER]
    assert not decoder.HasField("dynamic_batching") and not decoder.HasField("sequence_batching")
    assert decoder.max_batch_size == 1  # auto-complete's condition (MaxBatchSize() > 1) is false
    assert configs[ENSEMBLE].max_batch_size <= decoder.max_batch_size


@pytest.mark.parametrize("options", [{}, {"max_batch": 4, "max_prompts": 16, "max_points": 8}])
def test_each_plan_takes_exactly_the_batches_its_config_lets_triton_send(options: dict[str, int]) -> None:
    """The tensorrt backend refuses a config whose max_batch_size the plan's profile cannot take;
    a larger profile only costs activation memory (the decoder's was once 8 x 64 = 512 rows)."""
    from sam_triton_export.repository import DECODER, RepositoryOptions
    from sam_triton_export.tensorrt import plan_profiles

    configs = native_configs("tensorrt", **options)
    profiles = plan_profiles(RepositoryOptions(target="tensorrt", **options))
    for model, profile in profiles.items():
        for name, (low, opt, high) in profile.items():
            assert low[0] == 1 and high[0] == configs[model].max_batch_size, (model, name)
            assert all(lo <= o <= hi for lo, o, hi in zip(low, opt, high, strict=True)), (model, name)
    rows = profiles[DECODER]["point_coords"][2]
    assert rows[:3] == (1, options.get("max_prompts", 64), options.get("max_points", 64))
