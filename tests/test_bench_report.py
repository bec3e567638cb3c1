"""Bench outputs without a server: images, ratios, table, results.json, plots, perf_analyzer data."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from sam_triton.transforms import prepare_image
from sam_triton_bench.images import bench_images, click_point, load_directory, synthetic_image
from sam_triton_bench.loadgen import Sample
from sam_triton_bench.perf_analyzer import write_perf_analyzer_data
from sam_triton_bench.report import build_results, format_ratios, format_table, ratios, write_json
from sam_triton_bench.runner import LoadLevel, RunResult, sweep_levels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(kind: str, level: LoadLevel, latency: float, count: int = 20) -> RunResult:
    samples = [Sample(i, i * latency, i * latency, (i + 1) * latency, i < 2) for i in range(count)]
    return RunResult(kind, level, samples)


def test_synthetic_images_are_deterministic_and_include_1411() -> None:
    images = bench_images()
    assert images[0].size == (1411, 1411)
    assert all(im.rgb.dtype == np.uint8 and im.rgb.shape[2] == 3 for im in images)
    assert np.array_equal(synthetic_image(64, 48, seed=3), synthetic_image(64, 48, seed=3))
    assert images[0].rgb.std() > 20  # shapes and gradients, not a flat image


def test_click_points_are_spread_inside_the_image() -> None:
    pts = np.array([click_point(i, (100, 200)) for i in range(64)])
    assert (pts[:, 0] > 0).all() and (pts[:, 0] < 200).all()
    assert (pts[:, 1] > 0).all() and (pts[:, 1] < 100).all()
    assert len({(round(x), round(y)) for x, y in pts}) == 64


def test_image_directory(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(synthetic_image(30, 40)).save(tmp_path / "b.png")
    Image.fromarray(synthetic_image(20, 10)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_directory(tmp_path)
    assert [im.name for im in images] == ["a.jpg", "b.png"]
    assert images[1].size == (30, 40)
    with pytest.raises(FileNotFoundError):
        load_directory(tmp_path / "missing")


def test_sweep_levels() -> None:
    assert [lv.concurrency for lv in sweep_levels(8)] == [1, 2, 4, 8]
    assert [lv.concurrency for lv in sweep_levels(6)] == [1, 2, 4, 6]
    assert [lv.concurrency for lv in sweep_levels(1)] == [1]


def test_ratios_table_and_results_json(tmp_path: Path) -> None:
    served = fake_run("served", LoadLevel("closed", concurrency=1), 0.010)
    base = fake_run("onnxruntime", LoadLevel("closed", concurrency=1), 0.008)
    r = ratios(served, base)
    assert r["latency_p50"] == pytest.approx(10 / 8)
    assert r["throughput"] == pytest.approx(0.8)
    assert r["overhead_ms_p50"] == pytest.approx(2.0)
    assert "x1.250" in format_ratios([r])
    table = format_table([served, base])
    assert "served c=1" in table and "onnxruntime c=1" in table and "p99 ms" in table

    empty = RunResult("served", LoadLevel("open", rate=5.0), [])  # NaN stats must stay valid JSON
    doc = build_results(header={"tool": "t"}, served=[served, empty], baselines=[base], files={})
    write_json(doc, tmp_path / "results.json")
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["summary"]["latency_ms"]["p50"] == pytest.approx(10.0)
    assert loaded["summary"]["throughput_rps"] == pytest.approx(100.0)
    assert loaded["runs"][1]["summary"]["latency_ms"]["p99"] is None
    assert loaded["runs"][1]["load"] == {"mode": "open", "rate_rps": 5.0}
    assert loaded["ratios"][0]["baseline"] == "onnxruntime"


def test_plots_are_written(tmp_path: Path) -> None:
    from sam_triton_bench.plots import write_plots

    served = [fake_run("served", lv, 0.01 * lv.concurrency) for lv in sweep_levels(4)]
    base = [fake_run("reference", LoadLevel("closed"), 0.5, count=5)]
    names = write_plots(served, base, tmp_path, "test")
    assert names == ["latency_over_time.png", "latency_histogram.png", "throughput_vs_latency.png"]
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_perf_analyzer_input_data(tmp_path: Path) -> None:
    images = bench_images()[:1]
    written = write_perf_analyzer_data(tmp_path, images, url="host:9001")
    assert set(written) == {"sam_encoder", "sam_decoder", "sam"}
    enc = json.loads(written["sam_encoder"].read_text())["data"][0]
    padded, input_size = prepare_image(images[0].rgb)
    assert enc["image"]["shape"] == [1024, 1024, 3]
    assert base64.b64decode(enc["image"]["content"]["b64"]) == padded.tobytes()
    assert np.frombuffer(base64.b64decode(enc["input_size"]["content"]["b64"]), np.int32).tolist() == list(
        input_size
    )

    dec = json.loads(written["sam_decoder"].read_text())["data"][0]
    sizes = {"FP32": 4, "BOOL": 1}
    expected = {  # name: (shape without batch, element size)
        "image_embeddings": ([256, 64, 64], sizes["FP32"]),
        "point_coords": ([1, 2, 2], sizes["FP32"]),  # one click + SAM's padding point
        "point_labels": ([1, 2], sizes["FP32"]),
        "mask_input": ([1, 1, 256, 256], sizes["FP32"]),
        "has_mask_input": ([1], sizes["FP32"]),
        "multimask_output": ([1], sizes["BOOL"]),
    }
    for name, (shape, itemsize) in expected.items():
        assert dec[name]["shape"] == shape, name
        assert len(base64.b64decode(dec[name]["content"]["b64"])) == int(np.prod(shape)) * itemsize, name
    labels = np.frombuffer(base64.b64decode(dec["point_labels"]["content"]["b64"]), np.float32)
    assert labels.tolist() == [1.0, -1.0]

    ens = json.loads(written["sam"].read_text())["data"][0]
    assert set(ens) == {"image", "input_size", *expected} - {"image_embeddings"}
    readme = (tmp_path / "README.txt").read_text()
    assert "perf_analyzer -m sam_encoder -i grpc -u host:9001" in readme
