"""A long live stream against a running server: is its memory flat once the tracker's window is full?

One stream (:class:`sam_triton.VideoTracker`, frames back to back, no deadline), one object
clicked on frame 0, then ``--frames`` frames. Every ``--every`` frames it reads the server's
``sam_video_bytes`` (the video sessions' state as the server counts it) and the resident memory
of the tritonserver process tree (tritonserver plus its Python-backend stubs, /proc), and
prints a row; the rows go to ``--output`` as CSV. Every answer must be the next frame's, in
order. Behind BENCHMARKS.md "Video tracking":

    .venv/bin/sam-triton serve --repository REPO --grpc-port 18801 --http-port 18800 \\
        --metrics-port 18802 --quiet &
    .venv/bin/python benchmarks/video_memory.py --url localhost:18801 \\
        --metrics-url http://localhost:18802/metrics --pid "$(pgrep -n tritonserver)" \\
        --frames 1000 --every 50 --output /tmp/video_memory.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from process_rss import rss_bytes, tree
from sam_triton import VideoTracker
from sam_triton_bench.video import object_click, stream_frame, video_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--metrics-url", default="http://localhost:8002/metrics")
    parser.add_argument("--pid", type=int, required=True, help="the tritonserver process")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument(
        "--first", type=int, default=8, help="also read after each of the first N frames (the window filling)"
    )
    parser.add_argument("--size", default="240x320", help="HxW of the frames")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    size = (height, width)

    def server_rss() -> int:
        return sum(rss_bytes(pid) for pid in tree(args.pid))

    rows: list[tuple[object, ...]] = [
        ("frame", "sam_video_bytes", "server_rss_bytes", "elapsed_s", "frames_per_s_since_last_row")
    ]
    before = video_bytes(args.metrics_url)
    print(
        f"before the session: sam_video_bytes {before}, server RSS {server_rss() / 2**20:.1f} MiB", flush=True
    )
    with VideoTracker(args.url, timeout=600) as tracker:
        tracker.track(stream_frame(0, 0, size))
        tracker.add_points(0, 1, object_click(size), [1])
        t0 = last = time.perf_counter()
        done = 0
        for i in range(1, args.frames + 1):
            answer = tracker.track(stream_frame(0, i, size))
            if answer.frame_idx != i or answer.dropped or answer.obj_ids != (1,):
                print(f"frame {i}: answered {answer.frame_idx}, dropped {answer.dropped}", file=sys.stderr)
                return 1
            if i % args.every == 0 or i <= args.first:
                now = time.perf_counter()
                rate = (i - done) / (now - last)
                last, done = now, i
                row = (i, video_bytes(args.metrics_url), server_rss(), round(now - t0, 1), round(rate, 3))
                rows.append(row)
                with args.output.open("w", newline="") as f:
                    csv.writer(f).writerows(rows)
                print(
                    f"frame {i:5d}: sam_video_bytes {row[1]}, server RSS {row[2] / 2**20:.1f} MiB, "
                    f"{row[3]} s, {rate:.3f} frames/s",
                    flush=True,
                )
    print(
        f"closed: sam_video_bytes {video_bytes(args.metrics_url)}, server RSS {server_rss() / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
