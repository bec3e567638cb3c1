"""``sam-triton bench`` end to end on the served tiny model, and the in-process baselines.

Short runs (a few seconds): the point is that every path produces complete, well-formed
results, not the numbers themselves (timings are never asserted).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_triton import Prediction
from sam_triton.cli import main
from sam_triton_bench.baselines import BaselineSpec, OrtHandle, OrtSam, prepare_baseline
from sam_triton_bench.images import bench_images
from sam_triton_bench.scenarios import SCENARIOS, ScenarioOptions, click_prompt, encode_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(out: Path, *args: str) -> dict[str, Any]:
    assert main(["bench", "--output", str(out), "--no-progress", "--max-images", "2", *args]) == 0
    result: dict[str, Any] = json.loads((out / "results.json").read_text())
    return result


def _check_latency(summary: dict[str, Any]) -> None:
    lat = summary["latency_ms"]
    assert summary["ok"] > 0 and summary["errors"] == 0
    assert summary["throughput_rps"] > 0
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_click_at_concurrency_4_writes_results_and_plots(
    triton_server: Any, tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "click"
    doc = _bench(
        out,
        "--url",
        triton_server.grpc_url,
        "--scenario",
        "click",
        "--concurrency",
        "4",
        "--duration",
        "3",
        "--warmup",
        "0.5",
        "--baseline",
        "onnxruntime",
        "--repository",
        str(tiny_repository),
    )
    assert doc["config"]["scenario"] == "click"
    assert doc["config"]["levels"] == [{"mode": "closed", "concurrency": 4}]
    _check_latency(doc["summary"])
    run = doc["runs"][0]
    assert run["label"] == "served c=4"
    assert run["timeline"] and all({"t", "completed", "p50_ms", "p99_ms"} <= set(p) for p in run["timeline"])
    _check_latency(doc["baselines"][0]["summary"])
    ratio = doc["ratios"][0]
    assert ratio["baseline"] == "onnxruntime" and ratio["latency_p50"] > 0
    for name in ("latency_over_time.png", "latency_histogram.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert name in doc["files"]["plots"]
    assert (out / "samples.csv").read_text().count("\n") > doc["summary"]["requests"]
    printed = capsys.readouterr().out
    assert "served c=4" in printed and "p99 ms" in printed and "served c=4 / onnxruntime" in printed


def test_oneshot_open_loop(triton_server: Any, tmp_path: Path) -> None:
    doc = _bench(
        tmp_path / "oneshot",
        "--url",
        triton_server.grpc_url,
        "--scenario",
        "oneshot",
        "--rate",
        "4",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--no-plots",
    )
    assert doc["config"]["levels"] == [{"mode": "open", "rate_rps": 4.0}]
    _check_latency(doc["summary"])
    assert doc["files"]["plots"] == []


def test_automask_small_grid(triton_server: Any, tmp_path: Path) -> None:
    doc = _bench(
        tmp_path / "automask",
        "--url",
        triton_server.grpc_url,
        "--scenario",
        "automask",
        "--points-per-side",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--no-plots",
    )
    _check_latency(doc["summary"])
    assert doc["runs"][0]["notes"]["points_per_side"] == 4


def test_bad_arguments_fail_before_any_measurement(tmp_path: Path) -> None:
    out = tmp_path / "none"
    assert main(["bench", "--rate", "2", "--sweep", "--output", str(out)]) == 2
    assert main(["bench", "--baseline", "onnxruntime", "--output", str(out)]) == 2
    assert main(["bench", "--baseline", "reference", "--output", str(out)]) == 2
    assert (
        main(
            [
                "bench",
                "--url",
                "127.0.0.1:1",
                "--duration",
                "1",
                "--ready-timeout",
                "0.5",
                "--output",
                str(out),
            ]
        )
        == 1
    )
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_both_baselines_answer_each_scenario_alike(
    scenario: str, tiny_checkpoint: Path, tiny_repository: Path, tiny_sam: Any
) -> None:
    """A baseline request does the scenario's work: the in-process reference and the exported
    graphs under onnxruntime, on the same weights, give the same answer for the same request."""
    images = bench_images()[3:]  # the smallest image keeps this fast
    opts = ScenarioOptions(points_per_side=4, points_per_batch=8)
    weights = {"model_type": "tiny-test", "checkpoint": tiny_checkpoint, "repository": tiny_repository}
    reference, ort = (
        prepare_baseline(BaselineSpec(kind, **weights), scenario, images, opts).request(1)
        for kind in ("reference", "onnxruntime")
    )
    if scenario == "encode":  # SamPredictor.set_image answers nothing: its embedding, computed here
        from segment_anything import SamPredictor

        predictor = SamPredictor(tiny_sam)
        predictor.set_image(encode_image(images, 1, opts))
        expected = predictor.get_image_embedding().numpy()[0]
        assert reference is None and isinstance(ort, OrtHandle) and ort.embedding.embedding is not None
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(ort.embedding.embedding, expected, atol=1e-3 * scale)
    elif scenario in ("click", "oneshot"):
        masks, scores, _ = reference
        assert isinstance(ort, Prediction) and ort.masks.shape == masks.shape
        np.testing.assert_allclose(ort.scores, scores, atol=1e-3)
        assert all(np.mean(a != b) < 0.01 for a, b in zip(ort.masks, masks, strict=True))
    else:  # on random weights the default filters may keep no mask: then neither may keep one
        assert len(ort) == len(reference)
        assert sorted(r.area for r in ort) == pytest.approx(sorted(r["area"] for r in reference), rel=0.01)


def test_reference_weights_come_from_the_repository(tiny_repository: Path) -> None:
    from sam_triton_bench.baselines import resolve_weights

    model_type, checkpoint, seed = resolve_weights(BaselineSpec("reference", repository=tiny_repository))
    assert model_type == "tiny-test" and checkpoint is not None and checkpoint.is_file() and seed is None


def test_onnxruntime_baseline_does_the_reference_work(tiny_repository: Path, tiny_sam: Any) -> None:
    """The onnxruntime baseline must compute the same click as SamPredictor, or ratios lie."""
    from segment_anything import SamPredictor

    image = bench_images()[0]
    model = OrtSam(tiny_repository)
    prompt = click_prompt(5, image)
    pred = model.predict(model.embed(image.rgb), prompt, multimask_output=True)
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image.rgb)
    masks, scores, _ = predictor.predict(prompt.point_coords, prompt.point_labels, multimask_output=True)
    assert pred.masks.shape == masks.shape
    assert np.abs(pred.scores - scores).max() < 1e-3
    # Two empty masks (possible with random weights) agree perfectly.
    ious = [
        (a & b).sum() / (a | b).sum() if (a | b).any() else 1.0
        for a, b in zip(pred.masks, masks, strict=True)
    ]
    assert min(ious) > 0.99


def test_rounds_interleave_served_and_baseline(
    triton_server: Any, tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rounds"
    args = ["--url", triton_server.grpc_url, "--scenario", "click", "--concurrency", "1"]
    args += ["--duration", "2", "--warmup", "0.2", "--rounds", "2", "--no-plots"]
    args += ["--baseline", "onnxruntime", "--repository", str(tiny_repository)]
    assert main(["bench", "--output", str(out), "--max-images", "1", *args]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["rounds"] == 2
    # Progress labels show the order: served, baseline, served, baseline.
    err = capsys.readouterr().err
    order = ("c=1 [1/2]", "onnxruntime [1/2]", "c=1 [2/2]", "onnxruntime [2/2]")
    marks = [err.find(label) for label in order]
    assert -1 not in marks and marks == sorted(marks)
    # Each series holds both rounds, laid end to end on its own clock (round 2 after 1.2 s).
    for series in (doc["runs"][0], doc["baselines"][0]):
        _check_latency(series["summary"])
        buckets = [p["t"] for p in series["timeline"] if p["completed"]]
        assert min(buckets) < 1.0 and max(buckets) >= 2.0
    # Indices carry on across rounds (an index picks the image and click; a repeat would
    # turn round 2's encodes into server-side cache hits).
    rows = list(csv.DictReader((out / "samples.csv").open()))
    for label in ("served c=1", "onnxruntime c=1"):
        indices = [int(r["index"]) for r in rows if r["run"] == label]
        assert indices and len(indices) == len(set(indices))


def test_encode_images_are_unique_per_request_and_per_run() -> None:
    # The server skips encoding an image it holds: a repeat would measure a cache hit.
    from sam_triton_bench.scenarios import encode_image

    images = bench_images(None, 2)
    run1, run2 = ScenarioOptions(), ScenarioOptions()
    assert run1.content_nonce != run2.content_nonce
    first = encode_image(images, 0, run1)
    assert np.array_equal(first, encode_image(images, 0, run1))  # baselines see the same image
    assert not np.array_equal(first, encode_image(images, 2, run1))  # same source image, next use
    assert not np.array_equal(first, encode_image(images, 0, run2))  # a later run against the server
    assert np.count_nonzero(first != images[0].rgb) <= 16
