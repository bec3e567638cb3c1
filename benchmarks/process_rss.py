"""Resident memory of a process tree over time (tritonserver plus its Python-backend stubs).

Samples /proc every ``--interval`` seconds until ``--duration`` passes or the root process
exits, then prints the peak and writes ``time_s,rss_mib`` rows. Run beside a load test:

    .venv/bin/python benchmarks/process_rss.py --pid "$(pgrep -o tritonserver)" \
        --duration 90 --output /tmp/flood/rss.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found: list[int] = []
        for task in tasks:
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children(current)
    return pids


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="root of the process tree")
    parser.add_argument("--duration", type=float, required=True, help="seconds to sample")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--output", type=Path, required=True, help="CSV of time_s,rss_mib")
    args = parser.parse_args()
    start = time.monotonic()
    rows = []
    while time.monotonic() - start < args.duration and Path(f"/proc/{args.pid}").exists():
        rows.append((time.monotonic() - start, sum(rss_bytes(p) for p in tree(args.pid)) / 2**20))
        time.sleep(args.interval)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("time_s,rss_mib\n" + "".join(f"{t:.1f},{r:.0f}\n" for t, r in rows))
    if rows:
        first, peak, last = rows[0][1], max(r for _, r in rows), rows[-1][1]
        print(f"rss MiB: start {first:.0f}, peak {peak:.0f}, end {last:.0f} ({len(rows)} samples)")


if __name__ == "__main__":
    main()
