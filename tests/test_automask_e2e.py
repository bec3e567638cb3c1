"""RemoteAutomaticMaskGenerator on a real tritonserver vs SamAutomaticMaskGenerator, same weights.

The server (``sam_automask``) and the reference run the tiny-test checkpoint that the
``triton_server`` fixture exported. Random weights give image-wide masks whose boxes all span
the image, so box NMS would leave one mask and any comparison would pass: the parameters keep
every candidate instead (no IoU/stability filtering, NMS thresholds of 1.0 suppress nothing),
so each of the 3 masks of every prompt must be reproduced. The count is asserted, so the test
cannot silently degrade into comparing one blob. Crops are on (crop_n_layers=1; the crop
masks that touch a crop border are dropped by both sides, which is compared too).
"""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  (the reference's min_mask_region_area path: fail, never skip, without it)
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import segment_anything
import torch
from sam_triton import (
    AmgParams,
    AsyncSamClient,
    AutomaskOutput,
    InvalidInputError,
    ModelNotFoundError,
    RemoteAutomaticMaskGenerator,
    SamClient,
)
from sam_triton._core import Call, Op
from sam_triton._tensors import build_infer_request
from sam_triton.cli import main as cli_main

from tests.test_amg_core_generate import _compare

# Loose enough that every candidate survives (see the module doc); 4x4 points on the image,
# 2x2 on each of the 4 crops keeps the reference (torch decoder on 2 CPU cores) near 10 s.
PARITY = {
    "points_per_side": 4,
    "points_per_batch": 16,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
    "crop_n_layers": 1,
    "crop_nms_thresh": 1.0,
    "crop_n_points_downscale_factor": 2,
}


def _image(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 40, (1, 1, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(10):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(6, 30)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def _reference(sam: Any, image: np.ndarray, **kw: Any) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    with torch.no_grad():
        records = segment_anything.SamAutomaticMaskGenerator(sam, **kw).generate(image)
    return records, time.perf_counter() - start


def _assert_parity(ref: list[dict[str, Any]], ours: list[dict[str, Any]], shape: tuple[int, int]) -> None:
    assert ours and all(set(o) == set(ref[0]) for o in ours)
    stats = _compare(ref, ours, shape)
    assert stats["matched"] >= 0.98 and stats["extra"] <= 0.02, stats
    # Metadata of the same prompt's masks agree (onnxruntime vs torch: tiny float differences).
    by_point: dict[tuple[float, ...], list[dict[str, Any]]] = {}
    for r in ref:
        by_point.setdefault(tuple(r["point_coords"][0]), []).append(r)

    def same(o: dict[str, Any], r: dict[str, Any]) -> bool:
        return (
            o["bbox"] == r["bbox"]
            and o["crop_box"] == r["crop_box"]
            and abs(o["area"] - r["area"]) <= 0.02 * r["area"]
            and abs(o["predicted_iou"] - r["predicted_iou"]) < 1e-3
            and abs(o["stability_score"] - r["stability_score"]) < 0.02
        )

    close = sum(any(same(o, r) for r in by_point.get(tuple(o["point_coords"][0]), [])) for o in ours)
    assert close >= 0.98 * len(ref)


@pytest.fixture(scope="module")
def generator(triton_server: Any) -> Any:
    with RemoteAutomaticMaskGenerator(triton_server.grpc_url, **PARITY) as gen:
        yield gen


def test_parity_with_reference_on_crops(generator: Any, tiny_sam: Any) -> None:
    image = _image()
    ref, ref_s = _reference(tiny_sam, image, **PARITY)
    start = time.perf_counter()
    output = generator.run(image)
    ours_s = time.perf_counter() - start
    print(f"\nreference {ref_s:.2f}s, served {ours_s:.2f}s, {len(ref)} vs {len(output.records)} masks")
    # 16 full-image prompts x 3 masks; crop masks are cut by crop borders on these weights.
    assert len(ref) >= 40, "parity would not be discriminating"
    assert output.crops == 5 and output.prompts == 32
    _assert_parity(ref, output.records, image.shape[:2])
    for record in output.records:
        assert isinstance(record["segmentation"], np.ndarray) and record["segmentation"].dtype == np.bool_
        assert record["segmentation"].shape == image.shape[:2]
        assert record["area"] == int(record["segmentation"].sum())


def test_small_regions_and_coco_rle(triton_server: Any, tiny_sam: Any) -> None:
    image = _image(96, 128)
    kw = {**PARITY, "min_mask_region_area": 40, "output_mode": "coco_rle"}
    ref, _ = _reference(tiny_sam, image, **kw)
    with SamClient(triton_server.grpc_url, timeout=600) as client:
        ours = RemoteAutomaticMaskGenerator(client, **kw).generate(image)  # type: ignore[arg-type]
    assert len(ref) >= 30
    _assert_parity(ref, ours, image.shape[:2])  # type: ignore[arg-type]
    for record in ours:
        seg = record["segmentation"]
        assert isinstance(seg, dict) and isinstance(seg["counts"], str)
        decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        assert decoded.shape == image.shape[:2] and int(decoded.sum()) == record["area"]


def test_no_masks_gives_empty_list(generator: Any, triton_server: Any) -> None:
    gen = RemoteAutomaticMaskGenerator(triton_server.grpc_url, points_per_side=2, pred_iou_thresh=1e6)
    with gen:
        assert gen.generate(_image(40, 50)) == []


def test_bad_params_are_invalid_input_and_server_keeps_serving(triton_server: Any) -> None:
    url = triton_server.grpc_url
    with pytest.raises(InvalidInputError):  # caught before sending, like the reference's assert
        RemoteAutomaticMaskGenerator(url, points_per_side=None)
    too_many_crops = RemoteAutomaticMaskGenerator(url, points_per_side=4, crop_n_layers=6)
    with too_many_crops, pytest.raises(InvalidInputError, match="crops"):
        too_many_crops.generate(_image(64, 64))
    huge_batch = RemoteAutomaticMaskGenerator(url, points_per_side=2, points_per_batch=100000)
    with huge_batch, pytest.raises(InvalidInputError, match="points_per_batch"):
        huge_batch.generate(_image(64, 64))
    # Bytes that are not an AutomaskParams message, straight through the client's machinery.
    with SamClient(url) as client:
        request = build_infer_request(
            "sam_automask",
            {"image": _image(32, 32)[None], "params": np.array([[b"\xff\xff\xff"]], dtype=np.object_)},
            ["result"],
        )

        def raw_call() -> Op[Any]:  # bypasses the SDK's own parameter validation
            (response,) = yield [Call("ModelInfer", request, "raw automask")]
            return response

        with pytest.raises(InvalidInputError, match="AutomaskParams"):
            client._run(raw_call())
    with RemoteAutomaticMaskGenerator(
        url, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ) as gen:
        assert len(gen.generate(_image(48, 64))) >= 1  # still serving


def test_async_client_gives_the_same_records(generator: Any, triton_server: Any) -> None:
    image = _image(64, 80)
    kw = {**PARITY, "crop_n_layers": 0, "output_mode": "uncompressed_rle"}
    sync = RemoteAutomaticMaskGenerator(triton_server.grpc_url, **kw).generate(image)

    async def go() -> list[Any]:
        async with AsyncSamClient(triton_server.grpc_url, timeout=600) as client:
            return await RemoteAutomaticMaskGenerator(client, **kw).generate_async(image)  # type: ignore[arg-type]

    assert asyncio.run(go()) == sync


def test_clients_automask_is_the_generators_operation(triton_server: Any) -> None:
    """``SamClient.automask`` / ``AsyncSamClient.automask``: the public operation the generator wraps."""
    image = _image(64, 80)
    kw = {**PARITY, "crop_n_layers": 0, "output_mode": "uncompressed_rle"}
    expected = RemoteAutomaticMaskGenerator(triton_server.grpc_url, **kw).run(image)
    params = AmgParams(**kw)  # type: ignore[arg-type]
    with SamClient(triton_server.grpc_url, timeout=600) as client:
        sync = client.automask(image, params)
        with pytest.raises(ModelNotFoundError):
            client.automask(image, params, model="no_such_automask")

    async def go() -> AutomaskOutput:
        async with AsyncSamClient(triton_server.grpc_url, timeout=600) as client:
            return await client.automask(image, params)

    for output in (sync, asyncio.run(go())):
        assert output.records == expected.records and len(output.records) >= 1
        assert (output.image_size, output.crops, output.prompts) == ((64, 80), 1, expected.prompts)


def test_cli_writes_masks_metadata_and_overview(triton_server: Any, tmp_path: Path) -> None:
    from PIL import Image

    image_path = tmp_path / "in.png"
    Image.fromarray(_image(64, 80)).save(image_path)
    out = tmp_path / "out"
    args = [
        "automask",
        str(image_path),
        "--url",
        triton_server.grpc_url,
        "--output",
        str(out),
        "--no-progress",
    ]
    args += ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    args += ["--box-nms-thresh", "1.0"]
    assert cli_main(args) == 0
    rows = list(csv.DictReader((out / "metadata.csv").open()))
    # The columns of segment_anything's scripts/amg.py.
    header = "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score"
    header += ",crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
    assert rows and list(rows[0]) == header.split(",")
    for row in rows:
        mask = np.asarray(Image.open(out / f"{row['id']}.png"))
        assert mask.shape == (64, 80) and set(np.unique(mask)) <= {0, 255}
        assert int((mask > 0).sum()) == int(row["area"])
    assert len(list(out.glob("[0-9]*.png"))) == len(rows)
    assert Image.open(out / "overview.png").size == (80, 64)
    assert cli_main([*args[:6], "--no-progress", "--points-per-side", "0"]) == 2  # invalid input
