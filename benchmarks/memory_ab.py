"""A/B runs behind BENCHMARKS.md "Memory per replica" (vit_b, in-process, side by side).

    # ONNX Runtime's CPU arena on/off for sam_automask's decoder: one 64-prompt batch each,
    # alternated, in one process
    .venv/bin/python benchmarks/memory_ab.py arena REPOSITORY/sam_decoder/1 --rounds 8

    # two encoder graphs on OpenVINO (as sam_encoder runs them): resident memory of each in a
    # process of its own, then time per encode, alternated in one process
    .venv/bin/python benchmarks/memory_ab.py encoder OLD/model.onnx NEW/model.onnx --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def memory_mib() -> str:
    fields = {"VmRSS", "RssAnon", "VmHWM"}
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            found[key] = int(value.split()[0]) // 1024
    return f"RSS {found['VmRSS']} MiB (anon {found['RssAnon']}, peak {found['VmHWM']})"


def alternate(runs: dict[str, Callable[[], Any]], rounds: int) -> None:
    """Each run once per round, the order flipped every round; wall and CPU seconds."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    for name in names:
        print(
            f"{name}: wall median {statistics.median(wall[name]):.2f} s "
            f"{[round(t, 2) for t in wall[name]]}, CPU median {statistics.median(cpu[name]):.2f} s "
            f"{[round(t, 2) for t in cpu[name]]}"
        )
    first, second = names
    for label, series in (("wall", wall), ("CPU", cpu)):
        ratio = statistics.median(series[second]) / statistics.median(series[first])
        print(f"{second} / {first} ({label} medians): x{ratio:.3f}")


def arena(decoder_dir: Path, rounds: int) -> None:
    import onnxruntime as ort
    from sam_triton_server.backend.automask import warm_up
    from sam_triton_server.backend.prompt_decoder import PromptDecoder

    def decoder(arena_on: bool) -> PromptDecoder:
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = arena_on
        providers = ["CPUExecutionProvider"]
        return PromptDecoder(
            ort.InferenceSession(str(decoder_dir / "image_features.onnx"), options, providers=providers),
            ort.InferenceSession(str(decoder_dir / "prompt_decoder.onnx"), options, providers=providers),
        )

    on, off = decoder(True), decoder(False)
    alternate({"arena on": lambda: warm_up(on), "arena off": lambda: warm_up(off)}, rounds)


def encoder_feed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 1024, 1024, 3), dtype=np.uint8)
    return {"image": image, "input_size": np.array([[1024, 768]], dtype=np.int32)}


def encoder_memory(model: Path) -> None:
    from sam_triton_server.backend.openvino_session import OpenVinoSession

    session = OpenVinoSession(model)
    print(f"{model}: compiled: {memory_mib()}")
    output = session.run(None, encoder_feed())[0]
    print(f"{model}: after one encode: {memory_mib()}")
    np.save(model.with_suffix(".embedding.npy"), output)


def encoder(old: Path, new: Path, rounds: int) -> None:
    from sam_triton_server.backend.openvino_session import OpenVinoSession

    for model in (old, new):  # a process each, so one's memory does not count in the other's
        subprocess.run([sys.executable, __file__, "encoder-memory", str(model)], check=True)
    old_out, new_out = (np.load(m.with_suffix(".embedding.npy")) for m in (old, new))
    print(f"max abs difference of the embeddings: {np.abs(old_out - new_out).max()}")
    feed = encoder_feed()
    sessions = {"old": OpenVinoSession(old), "new": OpenVinoSession(new)}
    alternate({name: lambda s=s: s.run(None, feed) for name, s in sessions.items()}, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    arena_parser = commands.add_parser("arena", help="the automask decoder with the arena on and off")
    arena_parser.add_argument("decoder_dir", type=Path, help="a repository's sam_decoder/1")
    encoder_parser = commands.add_parser("encoder", help="two encoder graphs on OpenVINO")
    encoder_parser.add_argument("old", type=Path)
    encoder_parser.add_argument("new", type=Path)
    memory_parser = commands.add_parser("encoder-memory", help="(internal) one graph's memory")
    memory_parser.add_argument("model", type=Path)
    for sub in (arena_parser, encoder_parser):
        sub.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.command == "arena":
        arena(args.decoder_dir, args.rounds)
    elif args.command == "encoder":
        encoder(args.old, args.new, args.rounds)
    else:
        encoder_memory(args.model)


if __name__ == "__main__":
    main()
