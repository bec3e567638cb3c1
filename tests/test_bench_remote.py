"""``sam-triton bench --scenario remote``: the emulated link and the scenario end to end.

The link's pacing is checked on its own arithmetic (when each chunk is due), never on the wall
clock; the scenario runs against the tiny-test server through a real link proxy, and what it
reports is checked against bytes and the server's own counts: each photo a real encode, the
JPEG on the wire for today's format and the pixel tensor for the format before.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sam_triton.cli import main
from sam_triton_bench.link import Link, _Direction

from tests.conftest import ServedTriton


def test_link_parses_rate_and_round_trip() -> None:
    assert Link.parse("20:50") == Link(20.0, 50.0)
    assert Link.parse("100") == Link(100.0, 0.0)
    for bad in ("fast:10", "0:10", "10:-1"):
        with pytest.raises(ValueError):
            Link.parse(bad)


def test_link_serializes_chunks_then_delays_them() -> None:
    """8 Mbit/s = 1 MB/s and 100 ms round trip: a chunk is due after its own time on the wire,
    queued behind the chunks before it, plus half the round trip."""
    direction = _Direction(Link(8.0, 100.0))
    before = time.monotonic()
    first = direction.due(500_000)
    second = direction.due(250_000)
    assert first >= before + 0.5 + 0.05
    assert second - first == pytest.approx(0.25)


def encoder_runs(served: ServedTriton) -> int:
    url = f"http://127.0.0.1:{served.http_port}/v2/models/sam_encoder/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.load(response)["model_stats"][0]["inference_stats"]["success"]["count"])


def test_remote_scenario_end_to_end(
    triton_server: ServedTriton, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(images / "photo.png")
    out = tmp_path / "out"
    runs_before = encoder_runs(triton_server)
    argv = ["bench", "--url", triton_server.grpc_url, "--scenario", "remote", "--link", "500:4"]
    argv += ["--rounds", "2", "--clicks", "2", "--images", str(images), "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "compact / before" in printed and "500 Mbit/s, 4 ms RTT" in printed
    series: list[dict[str, Any]] = json.loads((out / "results.json").read_text())["series"]
    links = ("loopback (no link)", "500 Mbit/s, 4 ms RTT")
    assert [(s["link"], s["wire"]) for s in series] == [(k, w) for k in links for w in ("before", "compact")]
    for row in series:
        assert row["rounds"] == 2 and row["clicks"] == 4
        if row["wire"] == "compact":  # the JPEG itself, its session id and tensor names
            assert row["jpeg_bytes"] < row["embed_sent_bytes"] < row["jpeg_bytes"] + 1000
        else:  # the padded 1024x1024 pixel tensor
            assert row["embed_sent_bytes"] > 1024 * 1024 * 3
    # Every photo was new to the server: one encode each (2 warm-ups and 2 x 2 rounds per link).
    assert encoder_runs(triton_server) - runs_before == 2 * (2 + 2 * 2)
