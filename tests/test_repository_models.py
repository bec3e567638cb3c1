"""The python-onnxruntime models (model.py -> sam_triton_server.backend.models.*) driven in-process with a
stand-in for Triton's ``triton_python_backend_utils``: batching, grouping and per-request errors."""

from __future__ import annotations

import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from sam_triton_export.repository import DECODER, ENCODER, RepositoryOptions, repository_files
from sam_triton_server.backend.ort import create_session

from tests.test_repository import parse


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Error:
    INVALID_ARG, INTERNAL = 3, 13

    def __init__(self, message: str, code: int = 13) -> None:
        self.msg, self.code = message, code


class _Response:
    def __init__(self, output_tensors: list[_Tensor] | None = None, error: _Error | None = None) -> None:
        self.outputs = {t._name: t._array for t in output_tensors or []}
        self.error = error


class _Request:
    def __init__(self, **arrays: np.ndarray) -> None:
        self.inputs = {k: _Tensor(k, v) for k, v in arrays.items()}


@pytest.fixture()
def pb(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor  # type: ignore[attr-defined]
    module.TritonError = _Error  # type: ignore[attr-defined]
    module.InferenceResponse = _Response  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)  # type: ignore[attr-defined]
    module.Logger = types.SimpleNamespace(log_info=lambda m: None, log_warn=lambda m: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


@pytest.fixture(scope="module")
def repo(tiny_repository: Path) -> Path:
    """The session's exported tiny-test repository: its encoder and decoder graphs, loaded here
    in process with configs of each test's own (no export of its own)."""
    return tiny_repository


def load(model: str, repo: Path, **options: Any) -> Any:
    from sam_triton_server.backend.models import decoder, encoder

    text = repository_files(RepositoryOptions(**options))[f"{model}/config.pbtxt"].decode()
    config = json_format.MessageToJson(parse(text), preserving_proto_field_name=True)
    instance = (encoder if model == ENCODER else decoder).TritonPythonModel()
    args = {
        "model_config": config,
        "model_repository": str(repo / model),
        "model_version": "1",
        "model_name": model,
        "model_instance_device_id": "0",
    }
    # In a thread of its own: initialize lowers its calling thread's CPU priority (the config's
    # ``nice``), which here would otherwise be pytest's main thread and every server it starts.
    with ThreadPoolExecutor(1) as loader:
        loader.submit(instance.initialize, args).result()
    return instance


def decoder_request(
    rng: np.random.Generator, prompts: int, points: int, multimask: bool, **override: np.ndarray
) -> _Request:
    arrays = {
        "image_embeddings": rng.normal(0, 1, (1, 256, 64, 64)).astype(np.float32),
        "point_coords": rng.uniform(0, 1024, (1, prompts, points, 2)).astype(np.float32),
        "point_labels": np.ones((1, prompts, points), np.float32),
        "mask_input": np.zeros((1, prompts, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros((1, prompts), np.float32),
        "multimask_output": np.array([[multimask]]),
    }
    arrays.update(override)
    return _Request(**arrays)


def test_decoder_groups_a_ragged_batch_and_isolates_bad_requests(pb: Any, repo: Path) -> None:
    model = load(DECODER, repo, max_prompts=4)
    rng = np.random.default_rng(0)
    good = [
        decoder_request(rng, p, n, mm)
        for p, n, mm in [(1, 2, True), (1, 2, False), (3, 2, True), (1, 2, True), (2, 5, False)]
    ]
    bad = {
        "label": decoder_request(rng, 1, 2, True, point_labels=np.array([[[1, 4]]], np.float32)),
        "nan": decoder_request(rng, 1, 1, True, point_coords=np.array([[[[np.nan, 3]]]], np.float32)),
        "outside": decoder_request(rng, 1, 1, True, point_coords=np.array([[[[2000, 3]]]], np.float32)),
        "too many": decoder_request(rng, 5, 1, True),
        "shape": decoder_request(rng, 1, 2, True, point_labels=np.ones((1, 1, 3), np.float32)),
        "dtype": decoder_request(rng, 1, 2, True, has_mask_input=np.zeros((1, 1), np.float64)),
    }
    requests = good[:2] + list(bad.values()) + good[2:]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    errors = [r.error.msg for r in responses[2 : 2 + len(bad)]]
    assert all(r.error.code == _Error.INVALID_ARG for r in responses[2 : 2 + len(bad)])
    for needle, message in zip(
        ["not valid labels", "NaN", "input frame", "at most 4", "shape", "dtype"], errors, strict=True
    ):
        assert needle in message, message
    session = create_session(repo / DECODER / "1" / "model.onnx")
    for request, response in zip(good, responses[:2] + responses[2 + len(bad) :], strict=True):
        assert response.error is None
        feed = {k: t.as_numpy() for k, t in request.inputs.items()}
        masks, scores = session.run(None, feed)
        np.testing.assert_allclose(response.outputs["low_res_masks"], masks, atol=1e-5)
        np.testing.assert_allclose(response.outputs["iou_predictions"], scores, atol=1e-6)


def test_encoder_batches_and_rejects_bad_sizes(pb: Any, repo: Path) -> None:
    model = load(ENCODER, repo)
    image = np.zeros((1, 1024, 1024, 3), np.uint8)
    responses = model.execute(
        [
            _Request(image=image, input_size=np.array([[1024, 768]], np.int32)),
            _Request(image=image, input_size=np.array([[0, 768]], np.int32)),
            _Request(image=image, input_size=np.array([[1024, 1025]], np.int32)),
            _Request(image=image[:, :, :, :1], input_size=np.array([[1024, 768]], np.int32)),
            _Request(image=image, input_size=np.array([[512, 1024]], np.int32)),
        ]
    )
    assert [r.error is None for r in responses] == [True, False, False, False, True]
    assert "1..1024" in responses[1].error.msg and "shape" in responses[3].error.msg
    assert responses[0].outputs["image_embeddings"].shape == (1, 256, 64, 64)
    assert not np.allclose(responses[0].outputs["image_embeddings"], responses[4].outputs["image_embeddings"])
