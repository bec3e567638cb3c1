"""The sam_triton error hierarchy, the gRPC status mapping, retry policy, and SDK hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from sam_triton import errors
from sam_triton.config import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "message", "cls"),
    [
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "sam_decoder: point_coords must be finite",
            errors.InvalidInputError,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Request for unknown model: 'x' is not found",
            errors.ModelNotFoundError,
        ),
        (grpc.StatusCode.NOT_FOUND, "embedding not found: sha256:abc", errors.EmbeddingNotFoundError),
        (grpc.StatusCode.NOT_FOUND, "whatever", errors.ModelNotFoundError),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", errors.ServerUnavailableError),
        (
            grpc.StatusCode.UNAVAILABLE,
            "Request for unknown model: 'sam' has no available versions",
            errors.ModelNotReadyError,
        ),
        (grpc.StatusCode.UNAVAILABLE, "model 'sam' is not ready", errors.ModelNotReadyError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", errors.DeadlineExceededError),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max",
            errors.ResourceExhaustedError,
        ),
        (grpc.StatusCode.INTERNAL, "onnxruntime failed", errors.ServerError),
        (grpc.StatusCode.UNKNOWN, "?", errors.ServerError),
    ],
)
def test_mapping(code: grpc.StatusCode, message: str, cls: type) -> None:
    err = errors.from_rpc_error(FakeRpcError(code, message), context="embed")
    assert type(err) is cls
    assert isinstance(err, errors.SamTritonError)
    assert err.code == code.name and err.server_message == message
    assert str(err) == f"[{code.name}] embed: {message}"


def test_hierarchy_also_matches_builtin_kinds() -> None:
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.DeadlineExceededError, TimeoutError)
    assert issubclass(errors.ServerUnavailableError, ConnectionError)
    assert issubclass(errors.ModelNotFoundError, LookupError)
    local = errors.InvalidInputError("bad")
    assert local.code is None and str(local) == "bad"


def test_retry_policy() -> None:
    policy = RetryPolicy(retries=3, initial_backoff=0.1, max_backoff=0.3, jitter=0.0)
    unavailable = errors.ServerUnavailableError("x", code="UNAVAILABLE")
    assert [policy.delay(unavailable, a, None) for a in range(4)] == [0.1, 0.2, 0.3, None]
    assert policy.delay(unavailable, 0, remaining=0.05) is None  # no time left: give up now
    assert policy.delay(errors.InvalidInputError("x"), 0, None) is None
    # A model unloading on a stopping server (or still loading) computed nothing: try again,
    # elsewhere behind a balancer; a missing model is an answer.
    assert policy.delay(errors.ModelNotReadyError("x"), 0, None) == 0.1
    assert isinstance(errors.ModelNotReadyError("x"), errors.ServerUnavailableError)
    assert policy.delay(errors.ModelNotFoundError("x"), 0, None) is None


SDK_MODULES = [
    "sam_triton", "sam_triton.client", "sam_triton.aio", "sam_triton.predictor", "sam_triton.render",
    "sam_triton.transforms", "sam_triton.images", "sam_triton.prompts", "sam_triton._core",
    "sam_triton.cli.segment",
]  # fmt: skip


def test_sdk_modules_import_without_torch() -> None:
    code = (
        "import sys, importlib\n"
        "for n in ('torch','torchvision','segment_anything','onnx','onnxruntime'): sys.modules[n] = None\n"
        f"for m in {SDK_MODULES!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_mypy_strict() -> None:
    """The typed SDK and the common package it is built on pass mypy --strict (a few seconds).
    The server, export and bench packages are held to the same bar by ``make lint``, which CI
    runs after the tests: checking them means reading torch's types, ten times as long."""
    packages = ["-p", "sam_triton", "-p", "sam_triton_common"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", *packages],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
