"""The committed protobuf modules are exactly what proto/generate.py produces, and the
hand-written service stub calls Triton's method paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sam_triton.proto import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    generated = load_generator().generate(tmp_path)
    assert {p.name for p in generated} == {
        "automask_pb2.py",
        "automask_pb2.pyi",
        "inference_pb2.py",
        "inference_pb2.pyi",
    }
    for path in generated:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{path.name} is stale: run `make proto`"


def test_wire_names_match_the_kserve_v2_protocol() -> None:
    # Triton routes by the full service name and decodes by field number; the messages'
    # package is ours (never on the wire), so it cannot clash with tritonclient's.
    assert inference_pb2_grpc.method_path("ModelInfer") == "/inference.GRPCInferenceService/ModelInfer"
    assert inference_pb2.DESCRIPTOR.package == "sam_triton.inference"
    infer = inference_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert (infer["model_name"].number, infer["inputs"].number, infer["raw_input_contents"].number) == (
        1,
        5,
        7,
    )
    reply = inference_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name
    assert (reply["outputs"].number, reply["raw_output_contents"].number) == (5, 6)
