"""Resident memory of a process tree over time (tritonserver plus its Python-backend stubs).

Samples /proc every ``--interval`` seconds until ``--duration`` passes or the root process
exits, then prints the peak and writes ``time_s,rss_mib`` rows. Run beside a load test:

    .venv/bin/python benchmarks/process_rss.py --pid "$(pgrep -o tritonserver)" \
        --duration 90 --output /tmp/flood/rss.csv

``--breakdown`` prints one row per process instead (tritonserver, and each stub by the model
it runs): RSS, its anonymous part (heap, arenas: what the process itself allocated) and PSS
(shared library pages split between the processes that map them, so PSS sums to the tree's
real footprint while RSS counts each shared library once per process).
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


def status_kib(pid: int, fields: tuple[str, ...], name: str = "status") -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def role(pid: int) -> str:
    """``tritonserver``, or the model a Python-backend stub runs (its model.py's folder)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    program = Path(argv[0].decode()).name
    if program == "triton_python_backend_stub" and len(argv) > 1:
        return f"stub {Path(argv[1].decode()).parents[1].name}"
    return program


def breakdown(root: int) -> None:
    print(f"{'process':<28} {'RSS MiB':>8} {'anon MiB':>9} {'PSS MiB':>8}")
    totals = [0, 0, 0]
    for pid in tree(root):
        status = status_kib(pid, ("VmRSS", "RssAnon"))
        pss = status_kib(pid, ("Pss",), "smaps_rollup").get("Pss", 0)
        row = [status.get("VmRSS", 0), status.get("RssAnon", 0), pss]
        totals = [t + r for t, r in zip(totals, row, strict=True)]
        print(f"{role(pid):<28} {row[0] / 1024:>8.0f} {row[1] / 1024:>9.0f} {row[2] / 1024:>8.0f}")
    print(f"{'total':<28} {totals[0] / 1024:>8.0f} {totals[1] / 1024:>9.0f} {totals[2] / 1024:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="root of the process tree")
    parser.add_argument("--breakdown", action="store_true", help="one row per process, now, and exit")
    parser.add_argument("--duration", type=float, help="seconds to sample")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--output", type=Path, help="CSV of time_s,rss_mib")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.pid)
        return
    if args.duration is None or args.output is None:
        parser.error("sampling needs --duration and --output (or use --breakdown)")
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
