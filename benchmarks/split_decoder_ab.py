"""One click through the full decoder vs the split decoder (prompt_decoder on cached features).

    .venv/bin/python benchmarks/split_decoder_ab.py /tmp/vitb

Same random embedding and multimask click for both; rounds interleaved; the image features
are computed once, before timing, as sam_session does at embed time.
"""

import argparse
import time

import numpy as np
from decoder_ab import click_feed
from sam_triton_server.ort import create_session
from sam_triton_server.prompt_decoder import PromptDecoder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repository")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    directory = f"{args.repository}/sam_decoder/1"
    full = create_session(f"{directory}/model.onnx")
    split = PromptDecoder(
        create_session(f"{directory}/image_features.onnx"), create_session(f"{directory}/prompt_decoder.onnx")
    )
    feed = click_feed(0)
    embedding = feed["image_embeddings"][0]
    start = time.perf_counter()
    features = split.image_features(embedding)
    print(f"image_features once per embedding: {1e3 * (time.perf_counter() - start):.1f} ms (first run)")
    calls = {
        "full": lambda: full.run(None, feed),
        "split": lambda: split.run(
            features, feed["point_coords"], feed["point_labels"], feed["multimask_output"]
        ),
    }
    a, b = calls["full"](), calls["split"]()
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    print(f"max abs difference of the outputs: {diff:.3g}")
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            call()
            times = []
            for _ in range(args.calls):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            medians[name].append(1e3 * float(np.median(times)))
    for name, values in medians.items():
        rounds = " ".join(f"{v:.1f}" for v in values)
        print(f"{name}: per-round medians {rounds} ms; median {np.median(values):.1f}")
    ratios = [s / f for f, s in zip(medians["full"], medians["split"], strict=True)]
    print(f"split / full per round: {' '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
