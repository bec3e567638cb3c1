"""Export pipeline: checkpoints, refusals, CLI export + verify of tiny-test, vit_b once (slow)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import torch
from sam_triton_common.contract import read_export_info
from sam_triton_export import cli
from sam_triton_export.checkpoints import CheckpointError, load_state_dict
from sam_triton_export.model_builder import build_sam, save_random_checkpoint
from sam_triton_export.pipeline import ExportError, export_repository, is_up_to_date


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sam-triton")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


@pytest.fixture(scope="module")
def export_checkpoint(tiny_checkpoint: Path) -> Path:
    """The session's seeded tiny-test checkpoint file (tests/conftest.py)."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def exported_repo(tiny_repository: Path) -> Path:
    """tiny-test exported through the CLI (``sam-triton export --checkpoint``) from that file,
    verify included: the session's repository, which every served test runs on. Read only
    here, so a second export of the same model is not needed."""
    return tiny_repository


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.pth", "vit_b")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "sam_vit_b.pth"
    bad.write_bytes(b"\x80\x02not really a pickle" * 10)
    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
        load_state_dict(bad, "vit_b")


def test_truncated_checkpoint(export_checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(export_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        build_sam("tiny-test", cut)


def test_checkpoint_of_another_type_is_named(export_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a tiny-test checkpoint.*--model-type tiny-test"):
        load_state_dict(export_checkpoint, "vit_b")
    # A vit_l-shaped state dict (shapes are all that detection reads) offered as vit_b.
    fake = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}
    fake.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(24)})
    torch.save(fake, tmp_path / "vit_l.pth")
    with pytest.raises(CheckpointError, match="is a vit_l checkpoint"):
        load_state_dict(tmp_path / "vit_l.pth", "vit_b")


def test_not_a_sam_checkpoint(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a SAM vit_b checkpoint"):
        load_state_dict(tmp_path / "other.pth", "vit_b")


def test_random_weights_are_never_implicit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ExportError, match="no weights given"):
        export_repository("tiny-test", tmp_path)
    with pytest.raises(ValueError, match="random weights are never implicit"):
        build_sam("tiny-test")
    with pytest.raises(SystemExit, match="--random-weights"):
        run_cli("export", "--model-type", "tiny-test", "--repository", str(tmp_path))
    assert not (tmp_path / "sam_encoder").exists()


def test_export_cli_missing_checkpoint_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(
        "export",
        "--model-type",
        "vit_b",
        "--checkpoint",
        str(tmp_path / "x.pth"),
        "--repository",
        str(tmp_path / "repo"),
    )
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_seeded_checkpoints_are_reproducible(tmp_path: Path) -> None:
    a = save_random_checkpoint("tiny-test", tmp_path / "a.pth", seed=3)
    b = save_random_checkpoint("tiny-test", tmp_path / "b.pth", seed=3)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the zero-initialised position embeddings are filled, so parity exercises them
    assert sa["image_encoder.pos_embed"].abs().sum() > 0


def test_tiny_export_writes_repository(exported_repo: Path, export_checkpoint: Path) -> None:
    info = read_export_info(exported_repo)
    assert info is not None
    assert info["model_type"] == "tiny-test" and info["precision"] == "fp32"
    assert info["weights"]["checkpoint"] == str(export_checkpoint.resolve())
    assert info["verify"]["passed"] and info["verify"]["iou_mean"] >= 0.995
    for model in ("sam_encoder", "sam_decoder"):
        assert (exported_repo / model / "1" / "model.onnx").stat().st_size > 0
        assert (exported_repo / model / "1" / "model.py").read_text().startswith("from sam_triton_server")
    assert (exported_repo / "sam" / "config.pbtxt").exists()


def test_verify_cli_passes_and_fails_on_other_weights(
    exported_repo: Path, export_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli(
            "verify",
            "--model-type",
            "tiny-test",
            "--checkpoint",
            str(export_checkpoint),
            "--repository",
            str(exported_repo),
        )
        == 0
    )
    assert "PASS" in capsys.readouterr().out
    # Different weights than the export's: verify must notice and exit non-zero.
    assert (
        run_cli(
            "verify",
            "--model-type",
            "tiny-test",
            "--random-weights",
            "--seed",
            "99",
            "--repository",
            str(exported_repo),
        )
        == 1
    )
    assert "FAIL" in capsys.readouterr().out


def test_if_changed_skips_identical_export(exported_repo: Path, export_checkpoint: Path) -> None:
    start = time.perf_counter()
    result = export_repository("tiny-test", exported_repo, checkpoint=export_checkpoint, if_changed=True)
    assert result.skipped and time.perf_counter() - start < 5
    info = read_export_info(exported_repo)
    assert info is not None
    for change in (
        {"precision": "fp16"},
        {"target": "onnxruntime"},
        {"model_type": "vit_b"},
        {"weights": {"random_seed": 0}},
        {"weights": {"checkpoint_sha256": "0" * 64}},
    ):
        assert not is_up_to_date(exported_repo, {**info, **change}), change
    assert is_up_to_date(exported_repo, info)


def test_tensorrt_target_explains_itself(tmp_path: Path, export_checkpoint: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ExportError, match="tensorrt Python package is not installed"):
            export_repository("tiny-test", tmp_path, checkpoint=export_checkpoint, target="tensorrt")
    else:
        pytest.skip("tensorrt installed here")


def test_fp16_export_is_measured(export_checkpoint: Path, tmp_path: Path) -> None:
    result = export_repository("tiny-test", tmp_path, checkpoint=export_checkpoint, precision="fp16")
    assert result.verify is not None and result.verify.passed
    # measured, not assumed: fp16 differs from the fp32 reference, but only a little
    assert 0 < result.verify.logits_rel < 0.05
    assert result.files["sam_decoder/1/model.onnx"] < 15e6


@pytest.mark.slow
def test_vit_b_export_and_verify_from_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/serving/export.md: vit_b once, from a seeded checkpoint file, through the user code
    path. Verify checks its landscape image only (each vit_b image costs a reference encode;
    the portrait one's other padding is the same code, verified on tiny-test every run)."""
    from sam_triton_export import verify

    landscape = verify.sample_images()[0]
    assert landscape.shape[1] > landscape.shape[0]
    monkeypatch.setattr(verify, "sample_images", lambda: [landscape])
    work = tmp_path_factory.mktemp("vit_b")
    checkpoint = save_random_checkpoint("vit_b", work / "sam_vit_b_seeded.pth", seed=0)
    result = export_repository("vit_b", work / "repo", checkpoint=checkpoint)
    assert result.verify is not None and result.verify.passed, result.verify.format()
    assert result.verify.score_max_abs <= 1e-3 and result.verify.iou_min >= 0.99
    # What was verified is what a CPU-only server runs: the encoder on OpenVINO.
    assert result.verify.runtimes == {"encoder": "OpenVINO-CPU", "decoder": "CPUExecutionProvider"}
