"""How a graph's runtime is chosen (sam_triton_server.backend.ort.create_session): cpu_runtime, the
environment override, the fallback when OpenVINO is missing, and GPU providers first."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from sam_triton_server.backend.ort import CPU_RUNTIME_ENV, create_session


@pytest.fixture(scope="module")
def encoder_onnx(tiny_repository: Path) -> Path:
    """The session's exported tiny-test encoder (any weights do here): no export of its own."""
    return tiny_repository / "sam_encoder" / "1" / "model.onnx"


def _feed(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {
        "image": rng.integers(0, 256, (batch, 1024, 1024, 3), dtype=np.uint8),
        "input_size": np.array([[1024, 700], [512, 1024], [1024, 1024]][:batch], np.int32),
    }


def test_openvino_matches_onnxruntime_item_by_item(encoder_onnx: Path) -> None:
    openvino = create_session(encoder_onnx, cpu_runtime="openvino")
    onnxruntime = create_session(encoder_onnx, cpu_runtime="onnxruntime")
    assert openvino.get_providers() == ["OpenVINO-CPU"]
    assert onnxruntime.get_providers() == ["CPUExecutionProvider"]
    feed = _feed(3)
    (batched,) = openvino.run(["image_embeddings"], feed)
    (expected,) = onnxruntime.run(["image_embeddings"], feed)
    np.testing.assert_allclose(batched, expected, atol=1e-4, rtol=0)
    # Items of a batch are independent: the same image alone gives the same embedding.
    (alone,) = openvino.run(None, {k: v[1:2] for k, v in feed.items()})
    np.testing.assert_array_equal(alone[0], batched[1])
    with pytest.raises(ValueError, match="missing input 'input_size'"):
        openvino.run(None, {"image": feed["image"]})


def test_environment_overrides_cpu_runtime(encoder_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_RUNTIME_ENV, "onnxruntime")
    assert create_session(encoder_onnx, cpu_runtime="openvino").get_providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv(CPU_RUNTIME_ENV, "tensorflow")
    with pytest.raises(ValueError, match="cpu_runtime must be one of onnxruntime, openvino"):
        create_session(encoder_onnx)


def test_missing_openvino_falls_back_to_onnxruntime_and_says_so(
    encoder_onnx: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with caplog.at_level(logging.WARNING, logger="sam_triton_server.backend.ort"):
        session = create_session(encoder_onnx, cpu_runtime="openvino")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "openvino is not installed" in caplog.text


def test_gpu_providers_win_over_cpu_runtime(encoder_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asked for CUDA, a session is onnxruntime's (here it falls back to its CPU provider and warns)."""
    with caplog.at_level(logging.WARNING, logger="sam_triton_server.backend.ort"):
        session = create_session(
            encoder_onnx, cpu_runtime="openvino", providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    assert "OpenVINO-CPU" not in session.get_providers()
    assert "runs on the CPU" in caplog.text
