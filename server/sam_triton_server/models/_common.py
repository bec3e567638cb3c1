"""What the encoder and decoder Python-backend models share: config parameters, locating the
ONNX file, the session, per-request error responses and input checks.

``triton_python_backend_utils`` only exists inside Triton's Python stub, so it is passed in
(``pb``) rather than imported here; everything else is plain numpy and testable without Triton.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sam_triton_server.ort import Session, create_session

Array = npt.NDArray[Any]


class InvalidInput(ValueError):
    """A request the model refuses; answered with INVALID_ARGUMENT, the batch carries on."""


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    params = model_config.get("parameters", {})
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def int_parameter(params: dict[str, str], key: str, default: int) -> int:
    try:
        return int(params.get(key, default))
    except ValueError:
        raise ValueError(f"config parameter {key!r} must be an integer, got {params[key]!r}") from None


def lower_cpu_priority(nice: int) -> None:
    """Add ``nice`` to every thread of this stub process (Linux niceness is per thread; threads
    started later inherit it), so that on a CPU-bound server the interactive models' threads
    get the cores first. The config's ``nice`` parameter: 0 leaves the process alone."""
    if nice <= 0:
        return
    tasks = Path("/proc/self/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError:  # a thread that just exited
            continue


class _PbLogHandler(logging.Handler):
    """Forwards Python logging to Triton's log, so provider choices show up in the server log."""

    def __init__(self, pb: Any) -> None:
        super().__init__()
        self._pb = pb

    def emit(self, record: logging.LogRecord) -> None:
        log = self._pb.Logger.log_warn if record.levelno >= logging.WARNING else self._pb.Logger.log_info
        log(self.format(record))


class OnnxModelBase:
    """Config parsing and session creation common to both models."""

    model_config: dict[str, Any]
    params: dict[str, str]
    pb: Any

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb

        self.pb = pb
        self.model_config = json.loads(args["model_config"])
        self.params = parameters(self.model_config)
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.logger = logging.getLogger(f"sam_triton_server.models.{args.get('model_name', 'model')}")
        if not any(isinstance(h, _PbLogHandler) for h in self.logger.handlers):
            self.logger.addHandler(_PbLogHandler(pb))
        self.logger.setLevel(logging.INFO)
        self.device_id = int(args.get("model_instance_device_id", 0) or 0)
        lower_cpu_priority(int_parameter(self.params, "nice", 0))  # before any runtime thread exists
        self.session = self.create_session(self.params.get("onnx_file", "model.onnx"))
        self.setup()

    def create_session(self, onnx_file: str) -> Session:
        """A session for ``onnx_file`` (relative to this model's version directory), configured
        by this model's parameters."""
        return create_session(
            self.version_dir / onnx_file,
            intra_op_threads=int_parameter(self.params, "intra_op_threads", 0),
            device_id=self.device_id,
            cpu_runtime=self.params.get("cpu_runtime", "onnxruntime"),
            logger=self.logger,
        )

    def setup(self) -> None:
        """Model-specific initialisation after the session exists."""

    def error_response(self, message: str, invalid: bool = True) -> Any:
        error_cls = self.pb.TritonError
        code = getattr(error_cls, "INVALID_ARG" if invalid else "INTERNAL", None)
        error = error_cls(message) if code is None else error_cls(message, code)
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def input(self, request: Any, name: str) -> Array:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise InvalidInput(f"missing input tensor {name!r}")
        array: Array = tensor.as_numpy()
        return array

    def respond(self, arrays: dict[str, Array]) -> Any:
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, v) for k, v in arrays.items()])

    def encode_via_bls(
        self, encoder_model: str, images: Array, input_sizes: Array, *, timeout_us: int = 0
    ) -> Array:
        """Image embeddings from the encoder model by a BLS call: requests from several models
        (and plain clients) share the encoder's dynamic batches and instances. ``timeout_us``
        (0: none) lets the encoder's queue drop the request once its caller has given up."""
        pb = self.pb
        deadline = {"timeout": timeout_us} if timeout_us > 0 else {}
        reply = pb.InferenceRequest(
            model_name=encoder_model,
            requested_output_names=["image_embeddings"],
            inputs=[pb.Tensor("image", images), pb.Tensor("input_size", input_sizes)],
            **deadline,
        ).exec()
        if reply.has_error():
            raise RuntimeError(f"{encoder_model}: {reply.error().message()}")
        embeddings: Array = pb.get_output_tensor_by_name(reply, "image_embeddings").as_numpy()
        return embeddings

    def finalize(self) -> None:
        del self.session  # frees the runtime's memory before the stub exits


def check_shape(name: str, array: Array, expected: tuple[int | None, ...]) -> None:
    """``expected`` holds None for free dimensions."""
    if array.ndim != len(expected) or any(
        e is not None and a != e for a, e in zip(array.shape, expected, strict=True)
    ):
        shown = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise InvalidInput(f"{name} has shape {list(array.shape)}, expected {shown}")


def check_dtype(name: str, array: Array, dtype: type[np.generic]) -> None:
    if array.dtype != dtype:
        raise InvalidInput(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype).name}")


def check_finite(name: str, array: Array) -> None:
    if not np.isfinite(array).all():
        raise InvalidInput(f"{name} contains NaN or infinite values")


def split_batches(lengths: list[int], *arrays: Array) -> list[tuple[Array, ...]]:
    """Cut batch-concatenated outputs back into per-request pieces."""
    bounds = np.cumsum([0, *lengths])
    return [tuple(a[bounds[i] : bounds[i + 1]] for a in arrays) for i in range(len(lengths))]


RunFn = Callable[..., list[Array]]
