"""Triton configs of all three targets, parsed with Triton's own model-config protobuf, and the
committed model_repository/ compared with what the generator writes today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import text_format
from sam_triton_export.repository import (
    DECODER,
    ENCODER,
    ENSEMBLE,
    TARGETS,
    RepositoryOptions,
    repository_files,
    write_repository_files,
)

ROOT = Path(__file__).resolve().parents[1]
_PB2: ModuleType | None = None


def model_config_pb2() -> ModuleType:
    """tritonclient's model_config_pb2, loaded by file path: importing tritonclient.grpc would
    also load its service_pb2, whose ``inference.*`` symbols clash with our inference.proto."""
    global _PB2
    if _PB2 is None:
        spec = importlib.util.find_spec("tritonclient")
        # A dev dependency (tritonclient[grpc]): missing, the test fails rather than skips.
        assert spec is not None and spec.submodule_search_locations, "tritonclient is not installed"
        path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
        module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
        assert module_spec is not None and module_spec.loader is not None
        _PB2 = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(_PB2)
    return _PB2


def parse(text: str) -> Any:
    pb2 = model_config_pb2()
    return text_format.Parse(text, pb2.ModelConfig())


def io(config: Any, which: str) -> dict[str, tuple[str, list[int]]]:
    pb2 = model_config_pb2()
    return {t.name: (pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, which)}


def configs(target: str) -> dict[str, Any]:
    files = repository_files(RepositoryOptions(target=target))
    return {m: parse(files[f"{m}/config.pbtxt"].decode()) for m in (ENCODER, DECODER, ENSEMBLE)}


@pytest.mark.parametrize("target", TARGETS)
def test_configs_parse_and_keep_the_tensor_contract(target: str) -> None:
    c = configs(target)
    assert io(c[ENCODER], "input") == {
        "image": ("TYPE_UINT8", [1024, 1024, 3]),
        "input_size": ("TYPE_INT32", [2]),
    }
    assert io(c[ENCODER], "output") == {"image_embeddings": ("TYPE_FP32", [256, 64, 64])}
    assert io(c[DECODER], "input") == {
        "image_embeddings": ("TYPE_FP32", [256, 64, 64]),
        "point_coords": ("TYPE_FP32", [-1, -1, 2]),
        "point_labels": ("TYPE_FP32", [-1, -1]),
        "mask_input": ("TYPE_FP32", [-1, 1, 256, 256]),
        "has_mask_input": ("TYPE_FP32", [-1]),
        "multimask_output": ("TYPE_BOOL", [1]),
    }
    assert io(c[DECODER], "output") == {
        "low_res_masks": ("TYPE_FP32", [-1, -1, 256, 256]),
        "iou_predictions": ("TYPE_FP32", [-1, -1]),
    }
    for config in c.values():
        assert config.max_batch_size > 0
    assert c[ENCODER].HasField("dynamic_batching")
    assert list(c[ENCODER].dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert len(c[ENCODER].model_warmup) == 1 and len(c[DECODER].model_warmup) == 1
    kind = "KIND_CPU" if target == "python-onnxruntime" else "KIND_GPU"
    pb2 = model_config_pb2()
    for model in (ENCODER, DECODER):
        (group,) = c[model].instance_group
        assert pb2.ModelInstanceGroup.Kind.Name(group.kind) == kind
        assert (
            c[model].backend
            == {"python-onnxruntime": "python", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[target]
        )


def test_decoder_batching_per_target() -> None:
    python = configs("python-onnxruntime")[DECODER]
    assert python.HasField("dynamic_batching")
    assert all(t.allow_ragged_batch for t in python.input)
    params = {k: v.string_value for k, v in python.parameters.items()}
    assert params["max_prompts"] == "64" and params["max_points"] == "64"
    for target in ("onnxruntime", "tensorrt"):
        assert not configs(target)[DECODER].HasField("dynamic_batching")


def test_options_reach_the_configs() -> None:
    files = repository_files(RepositoryOptions(max_batch=4, max_prompts=16, instances=2))
    decoder = parse(files[f"{DECODER}/config.pbtxt"].decode())
    assert decoder.max_batch_size == 4 and decoder.instance_group[0].count == 2
    assert decoder.parameters["max_prompts"].string_value == "16"
    assert list(decoder.dynamic_batching.preferred_batch_size) == [2, 4]
    with pytest.raises(ValueError, match="target"):
        RepositoryOptions(target="tflite")


def test_ensemble_wires_encoder_into_decoder() -> None:
    c = configs("python-onnxruntime")
    ensemble = c[ENSEMBLE]
    assert ensemble.platform == "ensemble"
    encoder_step, decoder_step = ensemble.ensemble_scheduling.step
    assert (encoder_step.model_name, decoder_step.model_name) == (ENCODER, DECODER)
    assert encoder_step.output_map["image_embeddings"] == decoder_step.input_map["image_embeddings"]
    ensemble_inputs = set(io(ensemble, "input"))
    assert (
        set(encoder_step.input_map.values()) | (set(decoder_step.input_map.values()) - {"_image_embeddings"})
        == ensemble_inputs
    )
    assert set(decoder_step.output_map.values()) == set(io(ensemble, "output"))
    assert ensemble.max_batch_size <= min(c[ENCODER].max_batch_size, c[DECODER].max_batch_size)


def test_committed_repository_matches_generator(tmp_path: Path) -> None:
    """model_repository/ holds exactly what `export --target python-onnxruntime` writes for the
    defaults; regenerate with `sam-triton export ...` (or repository.write_repository_files)."""
    write_repository_files(tmp_path, RepositoryOptions())
    generated = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert generated == set(Path(p) for p in repository_files(RepositoryOptions()))
    for relative in sorted(generated):
        committed = ROOT / "model_repository" / relative
        assert committed.is_file(), f"{committed} is missing from the committed repository"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), f"{relative} drifted"


def test_warmup_input_size_is_a_valid_size() -> None:
    import numpy as np

    data = repository_files(RepositoryOptions())[f"{ENCODER}/warmup/input_size"]
    assert np.frombuffer(data, dtype="<i4").tolist() == [1024, 1024]
