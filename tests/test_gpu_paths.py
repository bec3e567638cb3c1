"""What a GPU container would hit first, proven without a GPU (docs/serving/gpu.md).

- The BLS encode asks for its outputs in CPU memory: on the native KIND_GPU targets the encoder's
  outputs are GPU tensors otherwise, and the Python backend's ``as_numpy()`` refuses those.
- The exported encoder graph has no UINT8 tensor except its input, the one rule of TensorRT's
  ONNX parser (onnx-tensorrt ModelImporter.cpp) the first graph broke.
- A GPU pod whose onnxruntime cannot use the GPU fails the model's load (SAM_TRITON_REQUIRE_GPU).

TensorRT plans: tests/test_tensorrt_plans.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from sam_triton_common.contract import ENCODER_MODEL, IMAGE

CPU, GPU = "TRITONSERVER_MEMORY_CPU", "TRITONSERVER_MEMORY_GPU"


def fake_python_backend(embedding: np.ndarray) -> SimpleNamespace:
    """The parts of triton_python_backend_utils a BLS encode touches, with the behaviour of
    python_backend (request_executor.cc, pb_tensor.cc): with no preferred memory an output stays
    where the KIND_GPU encoder produced it, and as_numpy() raises for a GPU tensor."""

    class PreferredMemory:
        def __init__(self, preferred_memory_type: str, preferred_device_id: int = 0) -> None:
            self.type, self.device_id = preferred_memory_type, preferred_device_id

    class OutputTensor:
        def __init__(self, memory: str) -> None:
            self.memory = memory

        def as_numpy(self) -> np.ndarray:
            if self.memory == GPU:
                raise ValueError("Tensor is stored in GPU and cannot be converted to NumPy.")
            return embedding

    class InferenceRequest:
        def __init__(
            self,
            model_name: str,
            requested_output_names: list[str],
            inputs: list[Any],
            preferred_memory: PreferredMemory | None = None,
            timeout: int = 0,
        ) -> None:
            self.memory = GPU if preferred_memory is None else preferred_memory.type

        def exec(self) -> Any:
            return SimpleNamespace(has_error=lambda: False, output=OutputTensor(self.memory))

    return SimpleNamespace(
        InferenceRequest=InferenceRequest,
        PreferredMemory=PreferredMemory,
        TRITONSERVER_MEMORY_CPU=CPU,
        TRITONSERVER_MEMORY_GPU=GPU,
        Tensor=lambda name, value: (name, value),
        get_output_tensor_by_name=lambda reply, name: reply.output,
    )


def test_bls_encode_receives_its_embeddings_in_cpu_memory() -> None:
    from sam_triton_server.backend.models._common import OnnxModelBase

    embedding = np.ones((1, 256, 64, 64), np.float32)
    model = OnnxModelBase.__new__(OnnxModelBase)
    model.pb = fake_python_backend(embedding)
    image, size = np.zeros((1, 1024, 1024, 3), np.uint8), np.array([[1024, 1024]], np.int32)
    got = model.encode_via_bls(ENCODER_MODEL, image, size, timeout_us=5_000_000)
    assert got is embedding
    # The fake is strict: a request without the preference gets the GPU tensor and fails.
    request = model.pb.InferenceRequest(model_name=ENCODER_MODEL, requested_output_names=[], inputs=[])
    with pytest.raises(ValueError, match="stored in GPU"):
        model.pb.get_output_tensor_by_name(request.exec(), "x").as_numpy()


@pytest.fixture(scope="module")
def encoder_onnx(tiny_repository: Path) -> Path:
    """The session's exported tiny-test encoder (any weights do here): no export of its own."""
    return tiny_repository / "sam_encoder" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def encoder_graph(encoder_onnx: Path) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(onnx.load(str(encoder_onnx), load_external_data=False))


def test_encoder_casts_the_uint8_image_before_anything_else(encoder_graph: onnx.ModelProto) -> None:
    graph = encoder_graph.graph
    (image,) = [i for i in graph.input if i.name == IMAGE]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    consumers = [n for n in graph.node if IMAGE in n.input]
    assert [n.op_type for n in consumers] == ["Cast"]
    (to,) = [a.i for a in consumers[0].attribute if a.name == "to"]
    assert to == onnx.TensorProto.FLOAT


def test_encoder_has_no_uint8_intermediate_tensor(encoder_graph: onnx.ModelProto) -> None:
    """onnx-tensorrt: "TensorRT does not support UINT8 types for intermediate tensors!" for
    any node output of type UINT8 that is not a graph output."""
    graph = encoder_graph.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    outputs = {o.name for o in graph.output}
    uint8 = [
        (node.op_type, name)
        for node in graph.node
        for name in node.output
        if types.get(name) == onnx.TensorProto.UINT8 and name not in outputs
    ]
    assert uint8 == []


@pytest.mark.parametrize("cpu_runtime", ["onnxruntime", "openvino"])
def test_a_required_gpu_fails_the_load_instead_of_running_on_the_cpu(
    encoder_onnx: Path, cpu_runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine's onnxruntime (PyPI's, CPU only, what the image once installed) offers no
    GPU provider: with SAM_TRITON_REQUIRE_GPU=1 the session is refused, naming the fix."""
    from sam_triton_server.backend.ort import REQUIRE_GPU_ENV, GpuUnavailable, create_session

    monkeypatch.delenv("SAM_TRITON_ORT_PROVIDERS", raising=False)
    create_session(encoder_onnx, cpu_runtime=cpu_runtime)  # unset: the CPU serves, as everywhere here
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    with pytest.raises(GpuUnavailable, match="onnxruntime-gpu"):
        create_session(encoder_onnx, cpu_runtime=cpu_runtime)


def test_a_gpu_provider_that_falls_back_to_the_cpu_is_refused(
    encoder_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu lists CUDAExecutionProvider even when CUDA or cuDNN fail to load; the
    session then quietly runs on the CPU. What the session reports is what counts."""
    import onnxruntime
    from sam_triton_server.backend.ort import REQUIRE_GPU_ENV, GpuUnavailable, create_session

    class FellBack(onnxruntime.InferenceSession):
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.delenv("SAM_TRITON_ORT_PROVIDERS", raising=False)
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", FellBack)
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    with pytest.raises(GpuUnavailable, match="would run on CPUExecutionProvider"):
        create_session(encoder_onnx)
