"""The exported encoder on each CPU runtime, and the PyTorch reference, interleaved in one run.

    .venv/bin/python benchmarks/encoder_runtimes.py /tmp/vitb --model-type vit_b --seed 0

Rounds run onnxruntime, OpenVINO, torch, onnxruntime, ... on the same 1024x1024 input, so a
shared machine's slow spells land on all three (BENCHMARKS.md). ``--seed`` must be the seed
the repository was exported with for the torch row to use the same weights.
"""

import argparse
import time

import numpy as np
from sam_triton_server.backend.ort import create_session


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repository")
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    path = f"{args.repository}/sam_encoder/1/model.onnx"
    rng = np.random.default_rng(0)
    feed = {
        "image": rng.integers(0, 256, (1, 1024, 1024, 3), dtype=np.uint8),
        "input_size": np.array([[1024, 1024]], np.int32),
    }
    sessions = {runtime: create_session(path, cpu_runtime=runtime) for runtime in ("onnxruntime", "openvino")}
    calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
    outputs = {name: call()[0] for name, call in calls.items()}
    diff = float(np.abs(outputs["openvino"] - outputs["onnxruntime"]).max())
    print(f"openvino vs onnxruntime: max abs difference {diff:.3g}")
    if not args.no_torch:
        import torch
        from sam_triton_export.model_builder import build_sam

        sam = build_sam(args.model_type, None, random_seed=args.seed)
        x = sam.preprocess(torch.from_numpy(feed["image"][0]).permute(2, 0, 1).float())[None]

        def reference() -> None:
            with torch.no_grad():
                sam.image_encoder(x)

        calls["torch"] = reference
        reference()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    base = np.median(times["onnxruntime"])
    for name, values in times.items():
        median = float(np.median(values))
        rounds = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:12s} median {median:6.2f} s (rounds {rounds}); / onnxruntime {median / base:.2f}")


if __name__ == "__main__":
    main()
