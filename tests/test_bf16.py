"""``export --precision bf16``: the image encoder computes in bfloat16 on OpenVINO's CPU plugin.

The export's verify reports the loss against fp32 and holds it to its own bounds; a real
tritonserver serves the repository and its encoder runs in bf16 (the runtime says so in the
server log, and the served embeddings carry the loss that fp32 does not); a CPU without bf16
instructions gets a clear refusal at export and at load, never a silent slow path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from sam_triton_common.contract import read_export_info
from sam_triton_export import cli
from sam_triton_export.pipeline import ExportError, check_precision
from sam_triton_export.verify import TOLERANCES, sample_images
from sam_triton_server.backend import cpu_precision
from sam_triton_server.backend.cpu_precision import PrecisionUnsupported, cpu_flags, unsupported_reason
from sam_triton_server.backend.ort import create_session

from tests.conftest import ServedTriton, start_triton

NO_BF16 = frozenset({"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni"})  # a CPU before bf16


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="sam-triton")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = int(args.handler(args))
    return code, out.getvalue()


def bf16_arguments(checkpoint: Path, repository: Path) -> list[str]:
    """``export`` / ``verify`` arguments for tiny-test at bf16."""
    weights = ["--model-type", "tiny-test", "--checkpoint", str(checkpoint)]
    return [*weights, "--repository", str(repository), "--precision", "bf16"]


@pytest.fixture(scope="module")
def bf16_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> tuple[Path, str]:
    """tiny-test exported with --precision bf16 through the CLI (verify included): the repository
    and what the command printed."""
    repository = tmp_path_factory.mktemp("bf16") / "repo"
    code, printed = run_cli("export", *bf16_arguments(tiny_checkpoint, repository))
    assert code == 0, printed
    return repository, printed


@pytest.fixture(scope="module")
def bf16_server(bf16_export: tuple[Path, str]) -> Iterator[ServedTriton]:
    served = start_triton(bf16_export[0])
    try:
        yield served
    finally:
        served.process.stop()


def test_bf16_needs_avx512_bf16_or_amx(tmp_path: Path) -> None:
    assert unsupported_reason("bf16", NO_BF16 | {"avx512_bf16"}) is None
    assert unsupported_reason("bf16", NO_BF16 | {"amx_bf16", "amx_tile"}) is None
    reason = unsupported_reason("bf16", NO_BF16)
    assert reason is not None and "avx512_bf16" in reason and "amx_bf16" in reason and "fp32" in reason
    assert unsupported_reason("fp32", NO_BF16) is None
    assert "must be one of fp32, bf16" in str(unsupported_reason("int4", NO_BF16))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_a_cpu_without_bf16_is_refused_at_export_and_verify(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda: NO_BF16)
    repository = tmp_path / "repo"
    assert run_cli("export", *bf16_arguments(tiny_checkpoint, repository))[0] == 2
    error = capsys.readouterr().err
    assert "--precision bf16: this CPU has no bf16 instructions" in error and "avx512_bf16" in error
    assert not repository.exists()  # nothing written
    assert run_cli("verify", *bf16_arguments(tiny_checkpoint, repository))[0] == 2
    assert "no bf16 instructions" in capsys.readouterr().err


def test_bf16_is_refused_where_openvino_does_not_run_the_encoder() -> None:
    from sam_triton_export.model_types import resolve_model_type

    with pytest.raises(ExportError, match="bf16 runs SAM 1 image encoders on OpenVINO"):
        check_precision(resolve_model_type("sam2.1_hiera_tiny"), "python-onnxruntime", "bf16")
    with pytest.raises(ExportError, match="with target tensorrt"):
        check_precision(resolve_model_type("tiny-test"), "tensorrt", "bf16")


def test_a_cpu_without_bf16_cannot_load_the_encoder(
    bf16_export: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the served encoder's load runs (models/_common.py: the config's inference_precision)."""
    encoder = bf16_export[0] / "sam_encoder" / "1" / "model.onnx"
    with pytest.raises(
        PrecisionUnsupported, match="runs on OpenVINO only, and this graph's cpu_runtime is onnxruntime"
    ):
        create_session(encoder, cpu_runtime="onnxruntime", cpu_precision="bf16")
    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda: NO_BF16)
    with pytest.raises(PrecisionUnsupported, match="this CPU has no bf16 instructions"):
        create_session(encoder, cpu_runtime="openvino", cpu_precision="bf16")


def test_export_reports_the_loss_against_fp32_within_its_bounds(bf16_export: tuple[Path, str]) -> None:
    from sam_triton_export.verify import CaseResult, VerifyReport

    repository, printed = bf16_export
    assert "verify (bf16)" in printed and "encoder on OpenVINO-CPU" in printed
    assert "mean abs diff" in printed and "(tolerance 0.02)" in printed and "PASS" in printed
    info = read_export_info(repository)
    assert info is not None and info["precision"] == "bf16"
    verify = info["verify"]
    assert verify["passed"] and verify["tolerances"] == dataclasses.asdict(TOLERANCES["bf16"])
    # A real loss, measured: well past fp32's exactness (~1e-6), inside the bf16 bounds.
    assert 1e-4 < verify["embedding_mean_abs"] < verify["embedding_max_abs"]
    assert verify["iou_min"] >= TOLERANCES["bf16"].iou_min
    # The bound fails a report past it.
    exact = CaseResult("exact masks", score_max_abs=0.0, logits_max_abs=0.0, logits_range=1.0, ious=[1.0])
    report = VerifyReport(precision="bf16", tolerances=TOLERANCES["bf16"], embedding_range=1.0, cases=[exact])
    report.embedding_max_abs = 0.05
    assert report.failures() == ["embeddings differ by 0.05 of range > 0.02"]


def test_the_served_encoder_computes_in_bf16(
    bf16_server: ServedTriton, bf16_export: tuple[Path, str]
) -> None:
    import numpy as np
    from sam_triton import RemoteSamPredictor
    from sam_triton_export.verify import encoder_input
    from segment_anything.utils.transforms import ResizeLongestSide

    config = (bf16_export[0] / "sam_encoder" / "config.pbtxt").read_text()
    assert 'key: "inference_precision"\n  value {\n    string_value: "bf16"' in config
    # The runtime's own word, from inside the server: OpenVINO compiled the encoder for bf16.
    log = "\n".join(bf16_server.process.log_tail)
    assert "sam_encoder/1/model.onnx runs on the CPU (bf16" in log, log
    image = sample_images()[0]
    with RemoteSamPredictor(bf16_server.grpc_url, server_embeddings=False) as remote:
        remote.set_image(image)
        served = remote.get_image_embedding()
    # The same graph in fp32, in-process: the served embedding carries bf16's loss (an fp32
    # server is within ~1e-6 of it), inside the bound verify holds it to.
    fp32 = create_session(bf16_export[0] / "sam_encoder" / "1" / "model.onnx", cpu_runtime="openvino")
    resize = types.SimpleNamespace(transform=ResizeLongestSide(1024))  # what encoder_input uses
    padded, input_size = encoder_input(resize, image)
    (exact,) = fp32.run(None, {"image": padded[None], "input_size": input_size[None]})
    difference = float(np.abs(served - exact).max()) / float(exact.max() - exact.min())
    assert 1e-4 < difference < TOLERANCES["bf16"].embedding_rel_range


def test_the_in_process_baseline_runs_the_served_precision(bf16_export: tuple[Path, str]) -> None:
    """``sam-triton bench --baseline onnxruntime`` against a bf16 server compares like with like."""
    from sam_triton_bench.baselines import OrtSam

    assert OrtSam(bf16_export[0]).encoder.precision == "bf16"
