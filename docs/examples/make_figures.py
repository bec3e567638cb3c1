"""Regenerate the example pictures of the docs (docs/images/*.png) with the real CLI.

    .venv/bin/python docs/examples/make_figures.py

Exports ``tiny-test`` with seeded random weights into a temporary repository, serves it with
``sam-triton serve`` on free loopback ports, runs ``sam-triton segment``, ``sam-triton
automask`` and a short ``sam-triton bench --scenario session`` against it on a real photo
(``grace_hopper.jpg``, shipped in matplotlib's sample data), copies what they wrote into
docs/images/ (shrunk so the repository stays small) and stops the server. A few minutes on two
cores. The masks of random weights are meaningless; the pictures show what the commands
write, which is what the pages that show them say.
"""

from __future__ import annotations

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


def run(*args: str) -> None:
    print("+ sam-triton", " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def keep(source: Path, name: str) -> None:
    """Copy a picture into docs/images/, shrunk to MAX_SIDE and palette-quantised."""
    image = Image.open(source).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    image.quantize(colors=128).save(IMAGES / name, optimize=True)
    print(f"wrote docs/images/{name} ({(IMAGES / name).stat().st_size // 1024} KiB)")


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sam-triton-figures-") as tmp:
        work = Path(tmp)
        repository = work / "repository"
        run(
            "export",
            "--model-type",
            "tiny-test",
            "--random-weights",
            "--seed",
            "0",
            "--repository",
            str(repository),
        )
        grpc, http, metrics = free_ports(3)
        url = f"127.0.0.1:{grpc}"
        ports = ["--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics)]
        server = subprocess.Popen([*CLI, "serve", "--repository", str(repository), *ports])
        try:
            # segment and bench wait for readiness themselves (bench: --ready-timeout).
            run(
                "bench",
                "--url",
                url,
                "--scenario",
                "session",
                "--users",
                "2",
                "--clicks",
                "4",
                "--think-time",
                "0.2",
                "--duration",
                "20",
                "--ready-timeout",
                "300",
                "--no-progress",
                "--output",
                str(work / "bench"),
            )
            run(
                "segment",
                str(PHOTO),
                "--url",
                url,
                "--point",
                "250,200",
                "--point",
                "60,500,0",
                "--box",
                "100,60,420,420",
                "--output",
                str(work / "overlay.png"),
            )
            run(
                "automask",
                str(PHOTO),
                "--url",
                url,
                "--points-per-side",
                "16",
                "--pred-iou-thresh",
                "0",
                "--stability-score-thresh",
                "0",
                "--no-progress",
                "--output",
                str(work / "masks"),
            )
        finally:
            server.terminate()
            server.wait(timeout=120)
        keep(work / "overlay.png", "segment-overlay.png")
        keep(work / "masks" / "overview.png", "automask-overview.png")
        keep(work / "bench" / "latency_over_time.png", "bench-latency.png")


if __name__ == "__main__":
    main()
