"""Two decoders side by side on the same click, rounds interleaved A, B, A, B, ...

Each of A and B is either a full decoder file (``sam_decoder/1/model.onnx``) or a
``sam_decoder/1`` directory, meaning its split pair: ``image_features.onnx`` once, before
timing (as ``sam_session`` does at embed time), then ``prompt_decoder.onnx`` per click.
Used to measure a change of a decoder graph on a noisy shared machine (BENCHMARKS.md):

    git stash; sam-triton export --model-type vit_b --random-weights --seed 0 \\
        --repository /tmp/before --no-verify
    git stash pop; sam-triton export ... --repository /tmp/after --no-verify
    .venv/bin/python benchmarks/decoder_ab.py /tmp/before/sam_decoder/1 /tmp/after/sam_decoder/1
    # the full decoder against the split one of the same export:
    .venv/bin/python benchmarks/decoder_ab.py /tmp/after/sam_decoder/1/model.onnx /tmp/after/sam_decoder/1
"""

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sam_triton_common.contract import IMAGE_FEATURES_FILE, PROMPT_DECODER_FILE
from sam_triton_server.backend.ort import create_session
from sam_triton_server.backend.prompt_decoder import PromptDecoder


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


def load_click(path: str, feed: dict[str, np.ndarray]) -> Callable[[], Sequence[np.ndarray]]:
    """One click through the decoder at ``path`` (a file or a split-pair directory)."""
    if not Path(path).is_dir():
        session = create_session(path)
        return lambda: session.run(None, feed)
    split = PromptDecoder(
        create_session(Path(path) / IMAGE_FEATURES_FILE), create_session(Path(path) / PROMPT_DECODER_FILE)
    )
    start = time.perf_counter()
    features = split.image_features(feed["image_embeddings"][0])
    print(f"{path}: image_features once per embedding {1e3 * (time.perf_counter() - start):.1f} ms (first run)")
    prompt = (feed["point_coords"], feed["point_labels"], feed["multimask_output"])
    return lambda: split.run(features, *prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    feed = click_feed(0)
    calls = {"A": load_click(args.a, feed), "B": load_click(args.b, feed)}
    outputs = {key: call() for key, call in calls.items()}
    diff = max(float(np.abs(x - y).max()) for x, y in zip(outputs["A"], outputs["B"], strict=True))
    print(f"max abs difference of the outputs: {diff:.3g}")
    medians: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for key, call in calls.items():
            call()
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            medians[key].append(1e3 * float(np.median(times)))
    for key, values in medians.items():
        rounds = " ".join(f"{v:.1f}" for v in values)
        print(f"{key}: per-round medians {rounds} ms; median {np.median(values):.1f} ms")
    ratios = [b / a for a, b in zip(medians["A"], medians["B"], strict=True)]
    print(f"B / A per round: {' '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
