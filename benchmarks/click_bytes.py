"""Bytes and time per click, compact answers against the wire format before, side by side.

Two SamClients on one server-held embedding per image: the default (``compact_answers=True``:
the server's masks, RLE / bit-packed / the mask's logits, whichever is smallest; no logits) and
``compact_answers=False`` (the three masks' 256x256 float32 logits; masks made in the SDK).
Each click is sent by both, alternately, so load and noise fall on both alike; every answer's
masks are compared bit for bit. A refinement of the best mask is measured too: compact names
the kept logits (``Prediction.mask_input()``), the other uploads them.

    .venv/bin/python benchmarks/click_bytes.py --url localhost:8001 --clicks 6

Bytes are protobuf payloads as the client's ``rpc_observer`` counts them (request + response),
the same measure as ``sam-triton bench --scenario session``.

Random weights (all a machine without checkpoints can serve) make masks as fragmented as
noise. The second table is what a trained model's masks cost: each click's three masks made
from object-shaped logits (signed distance to discs of growing radius around the click, in the
256x256 frame, as a trained decoder's whole/part/subpart masks look) by the same
``mask_codec.encode_prediction`` the server runs, against the 3 x 256 KiB of logits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton import Prediction, Prompt, SamClient
from sam_triton.transforms import preprocess_shape
from sam_triton_bench.images import bench_images, click_point
from sam_triton_bench.meter import ByteMeter
from sam_triton_common.mask_codec import encode_prediction


def timed_predict(client: SamClient, meter: ByteMeter, *args: Any) -> tuple[Prediction, float, int, int]:
    meter.take()
    start = time.perf_counter()
    pred = client.predict(*args)
    masks = pred.masks if isinstance(pred, Prediction) else None  # decoding is part of the click
    elapsed = time.perf_counter() - start
    assert isinstance(pred, Prediction) and masks is not None
    return (pred, elapsed, *meter.take())


def object_logits(
    point: tuple[float, float], size: tuple[int, int], radii: tuple[float, ...]
) -> npt.NDArray[np.float32]:
    """(M, 256, 256) logits: positive inside a disc of each radius (a share of the image's
    longer side) around ``point``, like a trained decoder's nested masks."""
    h, w = size
    in_h, in_w = preprocess_shape(h, w)
    scale = 256 / 1024 * in_w / w  # original pixels -> the 256 frame (same for both axes)
    x, y = point[0] * scale, point[1] * scale
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32) + 0.5
    distance = np.hypot(xx - x, yy - y)
    longest = 256 * max(in_h, in_w) / 1024
    logits: npt.NDArray[np.float32] = np.stack([(r * longest - distance) for r in radii]).astype(np.float32)
    return logits


def object_mask_rows(clicks: int) -> list[dict[str, Any]]:
    rows = []
    for image in bench_images():
        h, w = image.rgb.shape[:2]
        sizes = []
        for i in range(clicks):
            logits = object_logits(click_point(i, (h, w)), (h, w), (0.08, 0.15, 0.3))
            sizes.append(sum(len(e) for e in encode_prediction(logits, preprocess_shape(h, w), (h, w))))
        logits_bytes = 3 * 256 * 256 * 4
        rows.append(
            {"image": image.name, "mask_bytes": statistics.median(sizes), "logits_bytes": logits_bytes}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--clicks", type=int, default=6, help="clicks per image and format")
    parser.add_argument("--single-mask", action="store_true", help="multimask_output=False")
    parser.add_argument("--output", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    multimask = not args.single_mask
    meters = {"compact": ByteMeter(), "logits": ByteMeter()}
    clients = {
        "compact": SamClient(args.url, timeout=300, rpc_observer=meters["compact"]),
        "logits": SamClient(args.url, timeout=300, compact_answers=False, rpc_observer=meters["logits"]),
    }
    rows = []
    try:
        for image in bench_images():
            h, w = image.rgb.shape[:2]
            handle = clients["compact"].embed(image.rgb)
            clients["logits"].embed(image.rgb)  # a lookup: the same content id
            per: dict[str, dict[str, list[float]]] = {
                name: {"bytes": [], "up": [], "down": [], "ms": [], "refine_bytes": [], "refine_ms": []}
                for name in clients
            }
            for i in range(args.clicks):
                prompt = Prompt([click_point(i, (h, w))], [1])
                answers = {}
                for name, client in clients.items():
                    pred, seconds, up, down = timed_predict(client, meters[name], handle, prompt, multimask)
                    answers[name] = pred
                    per[name]["bytes"].append(up + down)
                    per[name]["up"].append(up)
                    per[name]["down"].append(down)
                    per[name]["ms"].append(seconds * 1e3)
                assert np.array_equal(answers["compact"].masks, answers["logits"].masks), "masks differ"
                point = click_point(i + 1000, (h, w))
                best = answers["logits"].best()
                follow_ups = {
                    "compact": answers["compact"].mask_input(best),
                    "logits": answers["logits"].mask_input(best),
                }
                refined = {}
                for name, client in clients.items():
                    refine = Prompt([prompt.point_coords[0], point], [1, 0], mask_input=follow_ups[name])  # type: ignore[index]
                    pred, seconds, up, down = timed_predict(client, meters[name], handle, refine, multimask)
                    refined[name] = pred
                    per[name]["refine_bytes"].append(up + down)
                    per[name]["refine_ms"].append(seconds * 1e3)
                assert np.array_equal(refined["compact"].masks, refined["logits"].masks), (
                    "refined masks differ"
                )
            row = {"image": image.name, "size": [h, w], "clicks": args.clicks, "multimask": multimask}
            for name in clients:
                row[name] = {key: statistics.median(values) for key, values in per[name].items()}
            row["click_bytes_ratio"] = sum(per["compact"]["bytes"]) / sum(per["logits"]["bytes"])
            row["refine_bytes_ratio"] = sum(per["compact"]["refine_bytes"]) / sum(
                per["logits"]["refine_bytes"]
            )
            row["click_ms_ratio"] = row["compact"]["ms"] / row["logits"]["ms"]
            rows.append(row)
    finally:
        for client in clients.values():
            client.close()
    print(
        f"{'image':>20} | {'click bytes compact':>19} {'logits':>8} {'ratio':>6} | "
        f"{'refine bytes compact':>20} {'logits':>8} {'ratio':>6} | {'p50 ms compact':>14} {'logits':>7}"
    )
    for row in rows:
        c, lg = row["compact"], row["logits"]
        print(
            f"{row['image']:>20} | {c['bytes']:>19,.0f} {lg['bytes']:>8,.0f} "
            f"{row['click_bytes_ratio']:>6.3f} | {c['refine_bytes']:>20,.0f} {lg['refine_bytes']:>8,.0f} "
            f"{row['refine_bytes_ratio']:>6.3f} | {c['ms']:>14.1f} {lg['ms']:>7.1f}"
        )
    objects = object_mask_rows(args.clicks)
    print(f"\n{'image':>20} | {'object masks: 3 encoded':>23} {'3 logits':>9} {'ratio':>6}")
    for row in objects:
        ratio = row["mask_bytes"] / row["logits_bytes"]
        print(f"{row['image']:>20} | {row['mask_bytes']:>23,.0f} {row['logits_bytes']:>9,} {ratio:>6.4f}")
    if args.output:
        args.output.write_text(json.dumps({"served": rows, "object_masks": objects}, indent=2))


if __name__ == "__main__":
    main()
