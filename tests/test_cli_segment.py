"""`sam-triton segment`: argument parsing, and a run against the real server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sam_triton.cli import segment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam-triton")
    segment.register(p.add_subparsers(dest="command", required=True))
    return p


def test_parse_points_and_box() -> None:
    args = parser().parse_args(
        [
            "segment",
            "x.png",
            "--point",
            "10,20",
            "--point",
            "5.5,6,0",
            "--box",
            "1,2,3,4",
            "--output",
            "o.png",
        ]
    )
    assert args.point == [(10.0, 20.0, 1), (5.5, 6.0, 0)]
    assert args.box == (1.0, 2.0, 3.0, 4.0)
    assert args.url == "localhost:8001" and not args.multimask


@pytest.mark.parametrize(
    "bad", [["--point", "1"], ["--point", "1,2,5"], ["--point", "a,b"], ["--box", "1,2,3"]]
)
def test_parse_errors(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["segment", "x.png", "--output", "o.png", *bad])
    assert "must be" in capsys.readouterr().err


def test_needs_a_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["segment", "x.png", "--output", str(tmp_path / "o.png")])
    assert args.handler(args) == 2
    assert "--point or a --box" in capsys.readouterr().err


def test_missing_image_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["segment", str(tmp_path / "nope.png"), "--point", "1,1", "--output", "o.png"])
    assert args.handler(args) == 2
    assert "not found" in capsys.readouterr().err


def test_segment_end_to_end(triton_server: Any, tmp_path: Path) -> None:
    from sam_triton.rle import coco_to_rle, rle_to_mask

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    image[20:60, 30:90] = [200, 30, 30]
    path = tmp_path / "in.png"
    Image.fromarray(image).save(path)
    out, js, cut = tmp_path / "overlay.png", tmp_path / "masks.json", tmp_path / "cut.png"
    args = parser().parse_args(
        ["segment", str(path), "--url", triton_server.grpc_url, "--point", "60,40", "--point", "5,5,0",
         "--box", "25,15,95,65", "--multimask", "--output", str(out), "--json", str(js), "--cutout", str(cut)]
    )  # fmt: skip
    assert args.handler(args) == 0
    assert Image.open(out).size == (120, 90)
    doc = json.loads(js.read_text())
    assert doc["size"] == [90, 120] and len(doc["masks"]) == 3
    assert sum(m["selected"] for m in doc["masks"]) == 1
    for m in doc["masks"]:
        mask = rle_to_mask(coco_to_rle(m["segmentation"]))
        assert mask.shape == (90, 120) and int(mask.sum()) == m["area"]
    assert Image.open(cut).mode == "RGBA"

    # server down: a clean error, exit status 1
    from tests.helpers import free_ports

    (port,) = free_ports(1)
    args = parser().parse_args(["segment", str(path), "--url", f"127.0.0.1:{port}", "--point", "1,1",
                                "--output", str(out), "--timeout", "3"])  # fmt: skip
    assert args.handler(args) == 1
