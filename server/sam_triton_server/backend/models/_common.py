"""What the Python-backend models share: config parameters, the ONNX graphs each declares,
per-request error responses (one exception -> Triton error code mapping) and input checks.

``triton_python_backend_utils`` only exists inside Triton's Python stub, so it is passed in
(``pb``) rather than imported here; everything else is plain numpy and testable without Triton.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import IMAGE, IMAGE_EMBEDDINGS, INPUT_SIZE, MODEL_FILE
from sam_triton_common.errors import InvalidInputError

from sam_triton_server.backend.cpu_precision import FP32, PRECISION_PARAMETER
from sam_triton_server.backend.metrics import Rejections
from sam_triton_server.backend.ort import Session, create_session

Array = npt.NDArray[Any]

_BLS_LOCK = threading.Lock()
"""One BLS call at a time per stub process. Triton 2.51's Python backend corrupts its shared
memory when two threads of one stub run BLS calls at once (the server aborted with
boost::interprocess::lock_exception, std::bad_alloc or SIGSEGV within a minute of a 64-client
upload flood with two embed workers; never with one)."""


class InvalidInput(ValueError):
    """A request the model refuses; answered with INVALID_ARGUMENT, the batch carries on."""


class Unavailable(RuntimeError):
    """This model cannot take the request now (overloaded, or its deadline passed): UNAVAILABLE,
    which the client may retry; the message says which (and ``reason``, the metrics' label)."""

    reason = "overloaded"


class DeadlinePassed(Unavailable):
    """The caller's deadline passed before the work started (here, or in the encoder's queue)."""

    reason = "expired"


class NotFound(LookupError):
    """A request for something this model does not hold; answered with NOT_FOUND."""


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    params = model_config.get("parameters", {})
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def int_parameter(params: dict[str, str], key: str, default: int) -> int:
    try:
        return int(params.get(key, default))
    except ValueError:
        raise ValueError(f"config parameter {key!r} must be an integer, got {params[key]!r}") from None


def thread_ids() -> set[int]:
    """The native ids of this process's threads (empty where /proc is not there)."""
    tasks = Path("/proc/self/task")
    return {int(t.name) for t in tasks.iterdir()} if tasks.is_dir() else set()


def lower_cpu_priority(nice: int, spare: Collection[int] = ()) -> None:
    """Add ``nice`` to every thread of this stub process but ``spare`` (Linux niceness is per
    thread; threads started later inherit it from the one that starts them), so that on a
    CPU-bound server the interactive models' threads get the cores first. The config's
    ``nice`` parameter: 0 leaves the process alone."""
    if nice <= 0:
        return
    threads = thread_ids()
    for tid in threads - set(spare) if threads else {0}:  # 0: the calling thread
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
    """Config parsing, graph loading and error mapping common to every model.

    A model declares the ONNX graphs it runs in ``GRAPHS``: attribute name -> the config
    parameter naming the file (relative to the version directory; ``onnx_file`` defaults to
    the model's own ``model.onnx``). Each becomes a session under that attribute before
    :meth:`setup` runs.
    """

    GRAPHS: ClassVar[Mapping[str, str]] = {}
    model_config: dict[str, Any]
    params: dict[str, str]
    pb: Any

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb

        self.pb = pb
        self.model_config = json.loads(args["model_config"])
        self.params = parameters(self.model_config)
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.name = args.get("model_name", "model")
        self.logger = logging.getLogger(f"sam_triton_server.backend.models.{self.name}")
        if not any(isinstance(h, _PbLogHandler) for h in self.logger.handlers):
            self.logger.addHandler(_PbLogHandler(pb))
        self.logger.setLevel(logging.INFO)
        self.device_id = int(args.get("model_instance_device_id", 0) or 0)
        self.rejections = Rejections(pb, self.name)
        # The stub's own threads (all but this one, which runs initialize and execute) answer
        # Triton's health checks: while a model loads, Triton declares the stub dead when one
        # second passes without an answer, and then waits for ever for the live stub to exit
        # (the server stays "loading"). Niced, on a busy machine, they missed that second.
        stub_threads = thread_ids() - {threading.get_native_id()}
        for attribute, parameter in self.GRAPHS.items():
            setattr(self, attribute, self.create_session(self._graph_file(parameter)))
        self.setup()
        # Once loaded (loading at full priority), and this thread's and the runtimes' only.
        lower_cpu_priority(int_parameter(self.params, "nice", 0), spare=stub_threads)

    def _graph_file(self, parameter: str) -> str:
        if parameter in self.params:
            return self.params[parameter]
        if parameter == "onnx_file":
            return MODEL_FILE
        raise ValueError(f"config parameter {parameter!r} (an ONNX file) is missing")

    def create_session(self, onnx_file: str) -> Session:
        """A session for ``onnx_file`` (relative to this model's version directory), configured
        by this model's parameters."""
        return create_session(
            self.version_dir / onnx_file,
            intra_op_threads=int_parameter(self.params, "intra_op_threads", 0),
            device_id=self.device_id,
            cpu_runtime=self.params.get("cpu_runtime", "onnxruntime"),
            cpu_precision=self.params.get(PRECISION_PARAMETER, FP32),
            logger=self.logger,
        )

    def setup(self) -> None:
        """Model-specific initialisation after the graphs are loaded."""

    def execute_each(self, requests: list[Any], handle: Callable[[Any], Any]) -> list[Any]:
        """``handle`` answers one request; an exception answers only its own request
        (:meth:`error_for`), never taking the server down."""
        responses = []
        for request in requests:
            try:
                responses.append(handle(request))
            except Exception as e:
                responses.append(self.error_for(e))
        return responses

    def error_for(self, exc: Exception) -> Any:
        """The error response for an exception raised while answering a request: bad input ->
        INVALID_ARG, something this model does not hold -> NOT_FOUND (the message unchanged:
        clients match its text), no capacity or time left -> UNAVAILABLE, anything else -> INTERNAL.
        Each is counted in ``sam_rejections_total`` by reason."""
        if isinstance(exc, InvalidInput | InvalidInputError):
            self.rejections.count("invalid")
            return self.error_response(f"{self.name}: {exc}")
        if isinstance(exc, NotFound):
            self.rejections.count("not_found")
            return self._error(str(exc), "NOT_FOUND")
        if isinstance(exc, Unavailable):
            self.rejections.count(exc.reason)
            message = str(exc)
            named = message if message.startswith(self.name) else f"{self.name}: {message}"
            return self._error(named, "UNAVAILABLE")
        self.rejections.count("internal")
        return self.error_response(f"{self.name} failed: {exc}", invalid=False)

    def error_response(self, message: str, invalid: bool = True) -> Any:
        return self._error(message, "INVALID_ARG" if invalid else "INTERNAL")

    def _error(self, message: str, code_name: str) -> Any:
        error_cls = self.pb.TritonError
        code = getattr(error_cls, code_name, None)  # older stubs have no codes
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
        self,
        encoder_model: str,
        images: Array,
        input_sizes: Array,
        *,
        timeout_us: int = 0,
        on_duration: Callable[[float], None] | None = None,
    ) -> Array:
        """Image embeddings from the encoder model by a BLS call: requests from several models
        (and plain clients) share the encoder's dynamic batches and instances. ``timeout_us``
        (0: none) lets the encoder's queue drop the request once its caller has given up.
        ``on_duration`` hears how long a successful call held this stub's BLS turn (its own
        wait for the turn excluded)."""
        inputs = {IMAGE: images, INPUT_SIZE: input_sizes}
        outputs = self.encode_features_via_bls(
            encoder_model, inputs, [IMAGE_EMBEDDINGS], timeout_us=timeout_us, on_duration=on_duration
        )
        return outputs[IMAGE_EMBEDDINGS]

    def encode_features_via_bls(
        self,
        encoder_model: str,
        inputs: dict[str, Array],
        outputs: Sequence[str],
        *,
        timeout_us: int = 0,
        on_duration: Callable[[float], None] | None = None,
    ) -> dict[str, Array]:
        """:meth:`encode_via_bls` for any family's encoder: these inputs, these outputs."""
        pb = self.pb
        deadline = {"timeout": timeout_us} if timeout_us > 0 else {}
        request = pb.InferenceRequest(
            model_name=encoder_model,
            requested_output_names=list(outputs),
            inputs=[pb.Tensor(name, array) for name, array in inputs.items()],
            # Without it the outputs stay where the encoder made them: on the GPU for the native
            # KIND_GPU targets, where as_numpy() below raises "Tensor is stored in GPU".
            preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0),
            **deadline,
        )
        with _BLS_LOCK:
            started = time.monotonic()
            reply = request.exec()
            took = time.monotonic() - started
        if reply.has_error():
            message = f"{encoder_model}: {reply.error().message()}"
            # The encoder's queue dropped it: the caller's deadline passed there (an expiry,
            # answered UNAVAILABLE, not an internal error).
            if "request timeout" in message.lower():
                raise DeadlinePassed(message)
            raise RuntimeError(message)
        if on_duration is not None:  # encodes only: a refusal or an expiry says nothing of one
            on_duration(took)
        return {name: pb.get_output_tensor_by_name(reply, name).as_numpy() for name in outputs}

    def finalize(self) -> None:
        for attribute in self.GRAPHS:  # frees the runtimes' memory before the stub exits
            delattr(self, attribute)


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
