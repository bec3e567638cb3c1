"""Served AMG (sam_automask through RemoteAutomaticMaskGenerator) vs SamAutomaticMaskGenerator.

Same machine, same weights (the checkpoint the repository was exported from), same
parameters, same image; alternating runs so machine noise hits both. Run from the repository root:

    .venv/bin/python benchmarks/automask_measure.py --repository /tmp/amgwork/repo \
        --checkpoint /tmp/amgwork/tiny.pth --model-type tiny-test --points-per-side 16 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd()))


def image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 40, (1, 1, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(25):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 30, h // 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--model-type", default="tiny-test")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--crop-n-layers", type=int, default=0)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.0)
    ap.add_argument("--stability-score-thresh", type=float, default=0.0)
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()

    import torch
    from sam_triton import RemoteAutomaticMaskGenerator
    from sam_triton_export.model_builder import build_sam
    from sam_triton_export.repository import RepositoryOptions, write_repository_files
    from segment_anything import SamAutomaticMaskGenerator

    from tests.conftest import start_triton

    h, w = (int(v) for v in args.size.split("x"))
    img = image(h, w)
    # Defaults of SamAutomaticMaskGenerator except what is given (random weights: the default
    # 0.88/0.95 thresholds remove every mask and the reference then crashes, so 0 by default).
    kw = {
        "points_per_side": args.points_per_side,
        "crop_n_layers": args.crop_n_layers,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
    }
    write_repository_files(args.repository, RepositoryOptions())
    served = start_triton(args.repository)
    results: dict[str, object] = {"params": kw, "image": [h, w], "torch_threads": torch.get_num_threads()}
    try:
        gen = RemoteAutomaticMaskGenerator(served.grpc_url, **kw)  # type: ignore[arg-type]
        gen_small = RemoteAutomaticMaskGenerator(served.grpc_url, points_per_side=2)
        gen_small.generate(img)  # warm-up: first request pays model/provider start-up
        sam = None if args.skip_reference else build_sam(args.model_type, args.checkpoint)
        served_s, ref_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = gen.run(img)
            served_s.append(time.perf_counter() - t)
            if sam is not None:
                t = time.perf_counter()
                with torch.no_grad():
                    ref = SamAutomaticMaskGenerator(sam, **kw).generate(img)  # type: ignore[arg-type]
                ref_s.append(time.perf_counter() - t)
                results["reference_masks"] = len(ref)
            print(f"served {served_s[-1]:.2f}s  reference {ref_s[-1] if ref_s else float('nan'):.2f}s", flush=True)
        n = len(out.records)
        results.update(
            served_s=served_s,
            reference_s=ref_s,
            served_masks=n,
            server_seconds=out.server_seconds,
            encode_seconds=out.encode_seconds,
            crops=out.crops,
            prompts=out.prompts,
            response_bytes=out.response_bytes,
            full_bool_masks_bytes=n * h * w,
            low_res_logits_bytes=out.prompts * 3 * 256 * 256 * 4,
        )
        if ref_s:
            results["ratio_best"] = min(served_s) / min(ref_s)
    finally:
        served.process.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
