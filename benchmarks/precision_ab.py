"""Served ``set_image`` of two models of one repository, alternated in one run: BENCHMARKS.md
"bf16 encoder" (vit_b exported twice, ``--name fp32`` and ``--name bf16 --precision bf16``).

    .venv/bin/python benchmarks/precision_ab.py --url 127.0.0.1:18711 \\
        --pid "$(pgrep -o tritonserver)" --models fp32,bf16 --rounds 6

Each round encodes the 1411x1411 bench image (made distinct per call, so every call is a real
encode) once per model, in alternating order, through ``RemoteSamPredictor.set_image`` (the
default server-held path: sam_session, the encoder by BLS). Per call it records the wall time
and the CPU time the whole server process tree (tritonserver and its stubs) spent: on a shared
machine the CPU time is the steadier measure of the work. Then it clicks the last image of each
model at ``--clicks`` points and compares the second model's masks and scores with the first's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sam_triton import RemoteSamPredictor
from sam_triton_bench.images import click_point, synthetic_images, unique_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_rss import tree  # noqa: E402  (a sibling script, not a package)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root`` and its descendants so far."""
    total = 0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / TICKS


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the tritonserver process")
    parser.add_argument("--models", default="fp32,bf16", help="two model names: baseline,candidate")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clicks", type=int, default=16)
    args = parser.parse_args()
    names = args.models.split(",")
    image = synthetic_images()[0]  # 1411x1411
    # A busy machine's encode can pass the SDK's default 60 s deadline.
    predictors = {name: RemoteSamPredictor(args.url, model=name, timeout=600.0) for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    nonce = time.time_ns()
    for round_ in range(args.rounds + 1):  # round 0 warms each model up, not counted
        for name in names if round_ % 2 else names[::-1]:
            rgb = unique_image(image, round_, nonce)
            cpu0, wall0 = cpu_seconds(args.pid), time.perf_counter()
            predictors[name].set_image(rgb)
            seconds, cpu_used = time.perf_counter() - wall0, cpu_seconds(args.pid) - cpu0
            print(f"round {round_} {name}: {seconds:.2f} s wall, {cpu_used:.2f} s server CPU", flush=True)
            if round_:
                wall[name].append(seconds)
                cpu[name].append(cpu_used)
    base, other = names
    for name in names:
        w, c = wall[name], cpu[name]
        print(
            f"{name}: wall median {statistics.median(w):.2f} s (mean {statistics.mean(w):.2f}),"
            f" server CPU median {statistics.median(c):.2f} s (mean {statistics.mean(c):.2f})"
        )
    for label, series in (("wall", wall), ("server CPU", cpu)):
        ratio = statistics.median(series[other]) / statistics.median(series[base])
        print(f"{other} / {base} {label}: {ratio:.3f} (medians)")
    ious, score_diffs = [], []
    for index in range(args.clicks):
        x, y = click_point(index, image.rgb.shape[:2])
        answers = [
            predictors[name].predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
            for name in names
        ]
        (masks_a, scores_a, _), (masks_b, scores_b, _) = answers
        ious += [mask_iou(a, b) for a, b in zip(masks_a, masks_b, strict=True)]
        score_diffs.append(float(np.abs(scores_a - scores_b).max()))
    print(
        f"{other} vs {base}, {args.clicks} clicks x 3 masks: mask IoU min {min(ious):.4f} mean "
        f"{statistics.mean(ious):.4f}; score max abs diff {max(score_diffs):.2e}"
    )
    for predictor in predictors.values():
        predictor.close()


if __name__ == "__main__":
    main()
