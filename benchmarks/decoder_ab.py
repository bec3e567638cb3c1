"""Two exported decoder ONNX files side by side: same click, rounds interleaved A, B, A, B, ...

Used to measure a change of the decoder graph on a noisy shared machine (BENCHMARKS.md):

    git stash; sam-triton export --model-type vit_b --random-weights --seed 0 --repository /tmp/before --no-verify
    git stash pop; sam-triton export ... --repository /tmp/after --no-verify
    .venv/bin/python benchmarks/decoder_ab.py /tmp/before/sam_decoder/1/model.onnx /tmp/after/sam_decoder/1/model.onnx
"""

import argparse
import time

import numpy as np
from sam_triton_server.ort import create_session


def click_feed(seed: int) -> dict[str, np.ndarray]:
    """One multimask click (a point plus SAM's padding point) on a random embedding."""
    rng = np.random.default_rng(seed)
    return {
        "image_embeddings": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
        "point_coords": np.array([[[[341.0, 512.0], [0.0, 0.0]]]], np.float32),
        "point_labels": np.array([[[1.0, -1.0]]], np.float32),
        "mask_input": np.zeros((1, 1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros((1, 1), np.float32),
        "multimask_output": np.ones((1, 1), np.bool_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    feed = click_feed(0)
    sessions = {"A": create_session(args.a), "B": create_session(args.b)}
    outputs = {k: s.run(None, feed) for k, s in sessions.items()}
    diff = max(float(np.abs(x - y).max()) for x, y in zip(outputs["A"], outputs["B"], strict=True))
    print(f"max abs difference of the outputs: {diff:.3g}")
    medians: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for key, session in sessions.items():
            session.run(None, feed)
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - start)
            medians[key].append(1e3 * float(np.median(times)))
    for key, values in medians.items():
        print(f"{key}: per-round medians {' '.join(f'{v:.1f}' for v in values)} ms; median {np.median(values):.1f} ms")
    ratios = [b / a for a, b in zip(medians["A"], medians["B"], strict=True)]
    print(f"B / A per round: {' '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
