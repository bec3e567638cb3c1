"""Regenerate the example pictures of the docs (docs/images/*.png) with the real CLI.

    .venv/bin/python docs/examples/make_figures.py [--work DIR]

Exports ``tiny-test`` with seeded random weights into a temporary repository, serves it with
``sam-triton serve`` on free loopback ports, runs ``sam-triton segment``, ``sam-triton
automask`` and a short ``sam-triton bench --scenario session`` against it on a real photo
(``grace_hopper.jpg``, shipped in matplotlib's sample data), copies what they wrote into
docs/images/ (shrunk so the repository stays small) and stops the server. A few minutes on two
cores. The masks of random weights are meaningless; the pictures show what the commands
write, which is what the pages that show them say. ``--work DIR`` keeps the exported
repository and the raw outputs there (a second run skips the export).
"""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
CLI = [sys.executable, "-m", "sam_triton"]
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MAX_SIDE = 640  # pixels: enough to read the picture, small enough to commit


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run(command: str) -> None:
    """One ``sam-triton`` command line (shell-quoted), which must succeed."""
    print("+ sam-triton", command, flush=True)
    subprocess.run([*CLI, *shlex.split(command)], check=True)


def keep(source: Path, name: str) -> None:
    """Copy a picture into docs/images/, shrunk to MAX_SIDE and palette-quantised."""
    image = Image.open(source).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    image.quantize(colors=128).save(IMAGES / name, optimize=True)
    print(f"wrote docs/images/{name} ({(IMAGES / name).stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="keep the repository and raw outputs here")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sam-triton-figures-") as tmp:
        work = args.work or Path(tmp)
        repository = shlex.quote(str(work / "repository"))
        photo, out = shlex.quote(str(PHOTO)), shlex.quote(str(work))
        run(f"export --model-type tiny-test --random-weights --seed 0 --if-changed --repository {repository}")
        grpc, http, metrics = free_ports(3)
        url = f"127.0.0.1:{grpc}"
        ports = f"--grpc-port {grpc} --http-port {http} --metrics-port {metrics}"
        server = subprocess.Popen([*CLI, "serve", *shlex.split(f"--repository {repository} {ports}")])
        try:
            # bench waits for readiness (--ready-timeout); segment and automask come after it.
            run(
                f"bench --url {url} --scenario session --users 2 --clicks 4 --think-time 0.2 --duration 20"
                f" --ready-timeout 300 --no-progress --output {out}/bench"
            )
            run(
                f"segment {photo} --url {url} --point 250,200 --point 60,500,0 --box 100,60,420,420"
                f" --output {out}/overlay.png"
            )
            # Random weights pass no default filter: thresholds 0 keep what the model scores.
            run(
                f"automask {photo} --url {url} --points-per-side 8 --pred-iou-thresh 0"
                f" --stability-score-thresh 0 --no-progress --output {out}/masks"
            )
        finally:
            server.terminate()
            server.wait(timeout=120)
        keep(work / "overlay.png", "segment-overlay.png")
        keep(work / "masks" / "overview.png", "automask-overview.png")
        keep(work / "bench" / "latency_over_time.png", "bench-latency.png")


if __name__ == "__main__":
    main()
