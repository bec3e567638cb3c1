"""The bench's session scenario: the virtual-user model with a fake client, then end to end.

The fake client stands in for the server only where the *harness* is under test (what users
do, what is counted where); the end-to-end tests run the real CLI against the tiny-test
tritonserver. Timings are never asserted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from sam_triton import errors
from sam_triton.aio import AsyncSamClient
from sam_triton.cli import main
from sam_triton.prompts import Prompt
from sam_triton.results import ImageEmbedding, Prediction
from sam_triton_bench.images import bench_images
from sam_triton_bench.session import (
    SessionOptions,
    SessionResult,
    count_rpc,
    run_session,
)
from sam_triton_bench.session_report import format_session, session_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClient:
    """embed/predict as a server-held AsyncSamClient answers them, with made-up masks.

    Reports each call's "bytes" to the bench's observer the way the SDK's rpc_observer would.
    """

    def __init__(self, fail: list[Exception] | None = None, click_delay: float = 0.001) -> None:
        self.click_delay = click_delay
        self.held: set[bytes] = set()
        self.prompts: list[tuple[ImageEmbedding, Prompt, Prediction | None]] = []
        self.fail = list(fail or [])

    async def embed(self, rgb: np.ndarray) -> ImageEmbedding:
        await asyncio.sleep(0.002)
        key = rgb.tobytes()
        hit = key in self.held
        self.held.add(key)
        count_rpc("ModelInfer", 100 if hit else rgb.nbytes, 10)
        h, w = rgb.shape[:2]
        return ImageEmbedding(None, (h, w), (1024, 1024), "sha256:x", from_cache=hit)

    async def predict(
        self, handle: ImageEmbedding, prompt: Prompt, multimask: bool, priority: int | None = None
    ) -> Prediction:
        await asyncio.sleep(self.click_delay)
        count_rpc("ModelInfer", 300, 3 * 256 * 256 * 4)
        if self.fail:
            self.prompts.append((handle, prompt, None))
            raise self.fail.pop(0)
        rng = np.random.default_rng(len(self.prompts))
        pred = Prediction(
            masks=np.zeros((3, 4, 4), bool),
            scores=rng.random(3).astype(np.float32),
            low_res_logits=rng.random((3, 256, 256)).astype(np.float32),
        )
        self.prompts.append((handle, prompt, pred))
        return pred


def _run(
    client: FakeClient, opts: SessionOptions, duration: float = 0.4, warmup: float = 0.0
) -> SessionResult:
    images = bench_images()[3:]  # the smallest image
    return asyncio.run(
        run_session(cast(AsyncSamClient, client), images, opts, duration=duration, warmup=warmup)
    )


def _stages(result: SessionResult) -> dict[str, Any]:
    return {run.kind: run for run in result.runs}


def test_users_embed_then_click_and_refine_with_the_previous_logits() -> None:
    client = FakeClient()
    opts = SessionOptions(users=2, clicks=3, think_time=0.0, refine_fraction=1.0)
    result = _run(client, opts)
    stages = _stages(result)
    assert set(stages) == {"embed", "click", "refine"}
    embeds = stages["embed"].summary.requests
    assert embeds >= 2 and result.users_started >= embeds
    # The first click of an image has nothing to refine; with refine_fraction 1 all others do.
    assert stages["click"].summary.requests <= embeds
    assert stages["refine"].summary.requests >= stages["click"].summary.requests
    previous: dict[int, Prediction | None] = {}  # per user (per handle)
    for handle, prompt, pred in client.prompts:
        assert prompt.point_coords is not None and prompt.point_labels is not None
        assert prompt.point_labels[0] == 1
        if len(prompt.point_coords) == 1:
            assert prompt.mask_input is None
        else:
            last = previous[id(handle)]
            assert last is not None and prompt.mask_input is not None
            # Points accumulate on the object, and the mask is the previous best logits.
            np.testing.assert_array_equal(prompt.mask_input[0], last.low_res_logits[last.best()])
        previous[id(handle)] = pred
    assert {len(p.point_coords) for _, p, _ in client.prompts if p.point_coords is not None} == {1, 2, 3}


def test_fresh_images_miss_and_reopened_images_hit_the_cache() -> None:
    fresh = _run(FakeClient(), SessionOptions(users=2, clicks=1, think_time=0.0))
    assert fresh.embeds > 2 and fresh.cache_hits == 0 and fresh.cache_hit_rate == 0.0
    reopened = _run(FakeClient(), SessionOptions(users=1, clicks=1, think_time=0.0, reopen_fraction=1.0))
    # The first image is fresh; every later one re-opens it, and the server holds it.
    assert reopened.embeds > 2 and reopened.cache_hits == reopened.embeds - 1


def test_rejections_are_counted_apart_from_failures() -> None:
    overloaded = errors.ServerOverloadedError("queue full", code="UNAVAILABLE")
    exhausted = errors.ResourceExhaustedError("too many", code="RESOURCE_EXHAUSTED")
    failed = errors.ServerError("boom", code="INTERNAL")
    client = FakeClient(fail=[overloaded, exhausted, failed])
    result = _run(client, SessionOptions(users=1, clicks=4, think_time=0.0, refine_fraction=0.0))
    click = session_record(result)["stages"]["click"]
    assert (click["errors"], click["rejected"], click["failed"]) == (3, 1, 2)
    assert click["ok"] == click["requests"] - 3 > 0
    assert "rejected" in format_session(result)


def test_bytes_are_counted_per_stage_and_not_during_warmup() -> None:
    client = FakeClient()
    result = _run(client, SessionOptions(users=1, clicks=2, think_time=0.0, refine_fraction=0.0), warmup=0.2)
    stages = session_record(result)["stages"]
    image_bytes = bench_images()[3].rgb.nbytes
    embeds, clicks = stages["embed"], stages["click"]
    assert embeds["wire"]["rpcs"] == embeds["requests"] > 0  # measured ones only
    assert embeds["wire"]["sent_bytes"] == image_bytes * embeds["requests"]
    assert clicks["wire"]["sent_bytes_per_request"] == 300
    assert clicks["wire"]["received_bytes"] == 3 * 256 * 256 * 4 * clicks["requests"]


def test_open_loop_users_arrive_at_a_rate_and_background_embedders_run() -> None:
    client = FakeClient()
    opts = SessionOptions(users=2, user_rate=20.0, clicks=2, think_time=0.01, background_embedders=1)
    result = _run(client, opts, duration=0.5)
    stages = _stages(result)
    assert stages["embed"].level.describe() == {"mode": "open", "rate_rps": 20.0}
    assert stages["background_embed"].summary.ok > 0
    assert result.users_started + result.users_turned_away > 0
    assert result.embeds == stages["embed"].summary.ok  # background embeds are load, not users


def test_drag_clicks_at_its_interval_and_counts_the_superseded() -> None:
    # Each click takes 50 ms and the next one comes 5 ms later: of every drag only the last
    # click is answered, the others are cancelled in flight (LatestClick) and counted.
    result = _run(FakeClient(click_delay=0.05), SessionOptions(users=1, clicks=8, drag_interval=0.005))
    stages = _stages(result)
    assert set(stages) == {"embed", "drag"}
    answered = stages["drag"].summary
    assert answered.ok == answered.requests == stages["embed"].summary.requests >= 1
    assert result.superseded == result.drag_clicks - answered.requests > 0
    assert "superseded" in format_session(result)
    assert session_record(result)["drag"] == {"clicks": result.drag_clicks, "superseded": result.superseded}
    # Answers faster than the pointer moves: every click is answered, none superseded.
    calm = _run(FakeClient(click_delay=0.001), SessionOptions(users=1, clicks=4, drag_interval=0.02))
    assert calm.superseded == 0 and calm.drag_clicks == _stages(calm)["drag"].summary.ok > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"users": 0},
        {"clicks": 0},
        {"user_rate": 0.0},
        {"refine_fraction": 1.5},
        {"reopen_fraction": -0.1},
        {"think_time": -1.0},
        {"think_distribution": "normal"},
        {"drag_interval": 0.0},
    ],
)
def test_bad_session_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SessionOptions(**bad)


def test_session_arguments_conflicting_with_other_loads_fail_early(tmp_path: Path) -> None:
    out = tmp_path / "none"
    for extra in (["--concurrency", "2"], ["--rate", "1"], ["--users", "0"], ["--baseline", "reference"]):
        assert main(["bench", "--scenario", "session", "--output", str(out), *extra]) == 2
    assert not out.exists()


# --------------------------------------------------------------------------- real server


def test_sdk_reports_cache_hits_and_bytes(triton_server: Any) -> None:
    seen: list[tuple[str, int, int]] = []
    image = bench_images()[3].rgb.copy()
    image[0, 0] = np.random.default_rng().integers(0, 255, 3)  # content no other test embedded

    async def go() -> tuple[ImageEmbedding, ImageEmbedding]:
        async with AsyncSamClient(triton_server.grpc_url, rpc_observer=lambda *a: seen.append(a)) as client:
            return await client.embed(image), await client.embed(image)

    first, second = asyncio.run(go())
    assert (first.from_cache, second.from_cache) == (False, True)
    # The client asks the encoder's family once, then: lookup + upload, then a lookup only
    # (the upload carries the image: this 480x640 one as a PNG, fewer bytes than its resized
    # 1024x1024 tensor).
    assert [m for m, _, _ in seen] == ["ModelMetadata"] + ["ModelInfer"] * 3
    seen = seen[1:]
    assert 1024 * 1024 * 3 > seen[1][1] > 100_000 > seen[0][1] == seen[2][1]
    assert all(received > 0 for _, _, received in seen)


def test_sync_client_reports_concurrent_and_failed_rpcs(triton_server: Any) -> None:
    from sam_triton import SamClient

    seen: list[tuple[str, int, int]] = []
    with SamClient(triton_server.grpc_url, rpc_observer=lambda *a: seen.append(a)) as client:
        handle = client.embed(bench_images()[3].rgb)
        seen.clear()
        # Two point counts: two decoder calls sent together (the futures path).
        client.predict(handle, [Prompt([[5, 5]], [1]), Prompt([[5, 5], [9, 9]], [1, 0])])
        assert [(m, r > 0) for m, _, r in seen] == [("ModelInfer", True)] * 2
        seen.clear()
        with pytest.raises(errors.EmbeddingNotFoundError):
            client.predict(ImageEmbedding(None, (480, 640), (768, 1024), "never-held"), Prompt([[5, 5]], [1]))
        assert len(seen) == 1 and seen[0][1] > 0 and seen[0][2] == 0  # sent, nothing back


def test_session_end_to_end(triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "session"
    args = ["bench", "--url", triton_server.grpc_url, "--scenario", "session", "--output", str(out)]
    args += ["--no-progress", "--max-images", "2", "--duration", "5", "--warmup", "0"]
    args += ["--users", "2", "--clicks", "2", "--think-time", "0.05", "--refine-fraction", "0.5"]
    args += ["--background-embedders", "1", "--background-automask", "1", "--points-per-side", "4"]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["scenario"] == "session"
    session = doc["session"]
    assert session["options"]["users"] == 2 and session["users_started"] >= 2
    assert session["cache"]["embeds"] > 0 and session["cache"]["hits"] == 0  # fresh images
    for stage in ("embed", "click", "background_embed", "automask"):
        record = session["stages"][stage]
        assert record["ok"] > 0 and record["errors"] == 0, stage
        lat = record["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], stage
        assert record["wire"]["sent_bytes"] > 0 and record["wire"]["received_bytes"] > 0, stage
    # An upload carries an image; a click a few points.
    embed_sent = session["stages"]["embed"]["wire"]["sent_bytes_per_request"]
    assert embed_sent > 100 * session["stages"]["click"]["wire"]["sent_bytes_per_request"]
    assert {r["label"].split()[0] for r in doc["runs"]} >= {"embed", "click", "background_embed", "automask"}
    assert (out / "latency_over_time.png").read_bytes()[:8] == PNG_MAGIC
    assert "throughput_vs_latency.png" not in doc["files"]["plots"]
    printed = capsys.readouterr().out
    assert "background_embed" in printed and "embed cache hits" in printed


def test_session_drag_end_to_end(triton_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "drag"
    args = ["bench", "--url", triton_server.grpc_url, "--scenario", "session", "--output", str(out)]
    args += ["--no-progress", "--max-images", "1", "--duration", "3", "--warmup", "0"]
    args += ["--users", "1", "--clicks", "30", "--drag-interval", "0.016"]
    assert main(args) == 0
    session = json.loads((out / "results.json").read_text())["session"]
    drag = session["stages"]["drag"]
    assert drag["ok"] > 0 and drag["errors"] == 0
    assert session["drag"]["clicks"] == drag["requests"] + session["drag"]["superseded"]


def test_ctrl_c_in_the_session_scenario_keeps_and_writes_what_was_measured(
    triton_server: Any, tmp_path: Path
) -> None:
    """Ctrl-C stops the users at once; the finished requests are printed and written, the run
    says it was interrupted and exits 130 (before: nothing was written)."""
    import re
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import communicate, takes_ctrl_c, wait_until

    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "sam_triton", "bench", "--url", triton_server.grpc_url]
    command += ["--scenario", "session", "--users", "1", "--clicks", "100000", "--think-time", "0"]
    command += ["--duration", "600", "--warmup", "0", "--max-images", "1", "--no-plots", "--output", str(out)]
    with err.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=takes_ctrl_c
        )
        done = lambda: [int(n) for n in re.findall(r"(\d+) req,", err.read_text(errors="replace"))]  # noqa: E731
        assert wait_until(lambda: max(done(), default=0) >= 5, timeout=180), err.read_text()
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        stdout, _ = communicate(process, timeout=60)
    assert time.monotonic() - interrupted_at < 20
    assert process.returncode == 130
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True
    clicks = results["session"]["stages"]["click"]
    assert clicks["ok"] >= 2 and clicks["errors"] == 0
    assert "click c=1" in stdout
    assert "interrupted (Ctrl-C)" in err.read_text()
