"""A new user's first hour against the tiny SAM server (issue 24): Ctrl-C in bench keeps what
was measured, Ctrl-C in automask stops the server's job at its next batch, and the files
segment and automask write are the ones asked for."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ServedTriton
from tests.helpers import communicate, takes_ctrl_c, wait_until

CANCELLED = re.compile(r"sam_automask: cancelled by the client; stopped before .* after (\d+) batches")


def sam_triton(*args: str) -> list[str]:
    return [sys.executable, "-m", "sam_triton", *args]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    rng = np.random.default_rng(24)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    return path


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _automask_stub(server: ServedTriton) -> int:
    """The Python-backend stub process running sam_automask (a child of tritonserver)."""
    for child in Path(f"/proc/{server.process.pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            if "sam_automask" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
    raise AssertionError("no sam_automask stub process")


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# --------------------------------------------------------------------------------- item 3


def test_ctrl_c_in_bench_keeps_and_writes_what_was_measured(
    triton_server: ServedTriton, tmp_path: Path
) -> None:
    """Interrupted inside the in-process baseline, which blocks the event loop between requests:
    the served series' rounds and the baseline's requests so far are kept."""
    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        process = subprocess.Popen(
            sam_triton("bench", "--url", triton_server.grpc_url, "--scenario", "click", "--duration", "600",
                       "--rounds", "100", "--warmup", "0.2", "--output", str(out), "--no-plots",
                       "--baseline", "onnxruntime", "--repository", str(triton_server.repository)),
            stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=takes_ctrl_c,
        )  # fmt: skip
        # The progress bars count finished requests: interrupt once the baseline has a few.
        baseline = lambda: [int(n) for n in re.findall(r"click onnxruntime.*?(\d+) req,", _read_text(err))]  # noqa: E731
        assert wait_until(lambda: max(baseline(), default=0) >= 5, timeout=180), _read_text(err)
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        stdout, _ = communicate(process, timeout=60)
    assert time.monotonic() - interrupted_at < 20, "stopped at once, not at the end of the 6 s round"
    assert process.returncode == 130
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True
    (served,), (in_process,) = results["runs"], results["baselines"]
    measured = served["summary"]["requests"] + in_process["summary"]["requests"]
    assert served["summary"]["requests"] >= 3 and in_process["summary"]["requests"] >= 3
    # Cut inside its 6 s round (0.2 s warm-up + 5.8 s measured), not run to the round's end.
    assert in_process["summary"]["window_s"] < 4.5
    samples = (out / "samples.csv").read_text().splitlines()
    assert len(samples) - 1 >= measured
    assert "served c=1" in stdout and "onnxruntime c=1" in stdout, "the table of what was measured"
    said = _read_text(err)
    assert f"interrupted (Ctrl-C): the {measured} requests measured before it are" in said
    assert str(out) in said


def test_ctrl_c_in_automask_stops_the_servers_job_at_its_next_batch(
    triton_server: ServedTriton, photo: Path, tmp_path: Path
) -> None:
    log_before = len(triton_server.process.log_tail)
    stub = _automask_stub(triton_server)
    # 5 crops in one encoder batch, then 640 decoder batches of 8 prompts: a minute or more of
    # CPU on the slowest machine, seconds on the fastest, so Ctrl-C always lands mid-job.
    process = subprocess.Popen(
        sam_triton("automask", str(photo), "--url", triton_server.grpc_url, "--output", str(tmp_path / "m"),
                   "--points-per-side", "32", "--crop-n-layers", "1", "--points-per-batch", "8",
                   "--no-progress"),
        stderr=subprocess.PIPE, text=True, preexec_fn=takes_ctrl_c,
    )  # fmt: skip
    busy_from = _cpu_seconds(stub)
    assert wait_until(lambda: _cpu_seconds(stub) - busy_from > 0.5, timeout=120), "the job never started"
    process.send_signal(signal.SIGINT)
    _, stderr = communicate(process, timeout=60)
    assert process.returncode == 130
    assert "interrupted; nothing written. The server stops the job at its next batch." in stderr
    assert not (tmp_path / "m").exists()

    def stopped() -> re.Match[str] | None:
        lines = list(triton_server.process.log_tail)[log_before:]
        return next((m for m in map(CANCELLED.search, lines) if m), None)

    assert wait_until(lambda: stopped() is not None, timeout=60), "the server never saw the cancellation"
    match = stopped()
    assert match is not None and int(match.group(1)) < 641, "stopped before the job's end"
    # And the core is free again: the stub no longer computes.
    idle_from = _cpu_seconds(stub)
    time.sleep(2.0)
    assert _cpu_seconds(stub) - idle_from < 0.3


# --------------------------------------------------------------------------------- item 5


def test_segment_writes_only_what_was_asked_in_the_format_of_its_suffix(
    triton_server: ServedTriton, photo: Path, tmp_path: Path
) -> None:
    common = ["segment", str(photo), "--url", triton_server.grpc_url, "--point", "60,40"]
    only_json = subprocess.run(
        sam_triton(*common, "--json", str(tmp_path / "m.json")), capture_output=True, text=True
    )
    assert only_json.returncode == 0, only_json.stderr
    assert json.loads((tmp_path / "m.json").read_text())["masks"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]

    images = ["--output", str(tmp_path / "o.jpg"), "--cutout", str(tmp_path / "c.webp")]
    jpeg = subprocess.run(sam_triton(*common, *images), capture_output=True, text=True)
    assert jpeg.returncode == 0, jpeg.stderr
    with Image.open(tmp_path / "o.jpg") as written:
        assert written.format == "JPEG"
    with Image.open(tmp_path / "c.webp") as written:
        assert written.format == "WEBP" and written.mode == "RGBA"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to write: give --output overlay.png, --json masks.json and/or --cutout object.png"),
        (["--output", "typo/o.png"], "--output typo/o.png: folder typo does not exist (create it first)"),
        (["--cutout", "c.jpg"], "--cutout c.jpg: JPEG has no transparency; use .png or .webp"),
        (
            ["--output", "overlay"],
            "--output overlay: unknown image type (no suffix); use .png, .jpg or .webp",
        ),
    ],
)
def test_segment_refuses_outputs_it_cannot_write_before_calling_the_server(
    photo: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    # No server at this url: the refusal comes before any call.
    command = sam_triton("segment", str(photo), "--url", "127.0.0.1:9", "--point", "1,1", *extra)
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- item 6


def test_automask_reruns_replace_the_earlier_masks_and_zero_masks_say_why(
    triton_server: ServedTriton, photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    base = [
        "automask",
        str(photo),
        "--url",
        triton_server.grpc_url,
        "--output",
        str(out),
        "--points-per-side",
        "4",
    ]
    first = subprocess.run(sam_triton(*base, "--pred-iou-thresh", "0", "--stability-score-thresh", "0"),
                           capture_output=True, text=True)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "1 crop(s), 16 prompts in 1 batch)" in first.stderr  # the job's size, before it runs
    kept = len(list(out.glob("*.png"))) - 1  # overview.png
    assert kept > 0

    second = subprocess.run(sam_triton(*base, "--pred-iou-thresh", "1.5"), capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert f"removed {kept} mask PNGs of an earlier run from {out}" in second.stdout
    assert sorted(p.name for p in out.iterdir()) == ["metadata.csv", "overview.png"]
    assert (
        "no mask passed the filters (--pred-iou-thresh 1.5, --stability-score-thresh 0.95)" in second.stderr
    )


def test_automask_leaves_numbered_pngs_it_did_not_write(photo: Path, tmp_path: Path) -> None:
    (tmp_path / "7.png").write_bytes(b"someone's picture")
    command = sam_triton("automask", str(photo), "--url", "127.0.0.1:9", "--output", str(tmp_path))
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "already holds 1 numbered PNGs (e.g. 7.png) that this command did not write" in result.stderr
    assert (tmp_path / "7.png").read_bytes() == b"someone's picture"
