"""Results: the stdout table, ``results.json``, ``samples.csv`` and served/baseline ratios.

``results.json`` layout (milliseconds and requests/s throughout)::

    {"tool", "version", "created_at", "command", "config", "environment", "images",
     "summary":   the first served run's summary (throughput_rps, latency_ms.p50/p90/p99/max ...),
     "runs":      [{label, kind, load, notes, summary, timeline}]  - served load levels,
     "baselines": [{...same...}]                                   - in-process runs,
     "ratios":    [{served, baseline, latency_p50, ..., throughput, overhead_ms_p50}],
     "files":     {"samples": "samples.csv", "plots": [...]}}

Ratios are served / baseline (< 1: the server is faster). NaN is written as null so the file
is strict JSON.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runner import RunResult


def _ratio(a: float, b: float) -> float | None:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _diff(a: float, b: float) -> float | None:
    return a - b if math.isfinite(a) and math.isfinite(b) else None


def ratios(served: RunResult, baseline: RunResult) -> dict[str, Any]:
    """How the served run compares with an in-process baseline measured in the same run.

    Latency ratios compare like with like only at concurrency 1 (the baseline runs one
    request at a time); at higher concurrency the throughput ratio is the meaningful one.
    """
    s, b = served.summary, baseline.summary
    out: dict[str, Any] = {"served": served.label, "baseline": baseline.kind}
    for stat in ("p50", "mean", "p90", "p99"):
        out[f"latency_{stat}"] = _ratio(getattr(s.latency_ms, stat), getattr(b.latency_ms, stat))
    out["throughput"] = _ratio(s.throughput_rps, b.throughput_rps)
    # The absolute difference is what the click goal is stated in (<= 2 ms of overhead).
    out["overhead_ms_p50"] = _diff(s.latency_ms.p50, b.latency_ms.p50)
    out["overhead_ms_mean"] = _diff(s.latency_ms.mean, b.latency_ms.mean)
    return out


def all_ratios(served: Sequence[RunResult], baselines: Sequence[RunResult]) -> list[dict[str, Any]]:
    return [ratios(s, b) for s in served for b in baselines]


def run_record(run: RunResult) -> dict[str, Any]:
    return {
        "label": run.label,
        "kind": run.kind,
        "load": run.level.describe(),
        "notes": run.notes,
        "summary": run.summary.to_dict(),
        "timeline": [vars(p) for p in run.timeline],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def build_results(
    *,
    header: dict[str, Any],
    served: Sequence[RunResult],
    baselines: Sequence[RunResult],
    files: dict[str, Any],
) -> dict[str, Any]:
    """The ``results.json`` document; ``header`` holds tool/config/environment/images."""
    primary = served[0] if served else None
    document: dict[str, Any] = dict(header)
    document["summary"] = (
        {"label": primary.label, **primary.summary.to_dict()} if primary is not None else None
    )
    document["runs"] = [run_record(r) for r in served]
    document["baselines"] = [run_record(r) for r in baselines]
    document["ratios"] = all_ratios(served, baselines)
    document["files"] = files
    result: dict[str, Any] = _json_safe(document)
    return result


def write_json(document: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_samples_csv(runs: Sequence[RunResult], path: Path) -> None:
    """Every request of every run (warm-up included), for re-analysis without re-running."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["run", "index", "scheduled_s", "start_s", "end_s", "latency_ms", "warmup", "error", "status"]
        )
        for run in runs:
            for s in run.samples:
                writer.writerow(
                    [
                        run.label,
                        s.index,
                        f"{s.scheduled:.6f}",
                        f"{s.start:.6f}",
                        f"{s.end:.6f}",
                        f"{s.latency * 1000.0:.3f}",
                        int(s.warmup),
                        s.error or "",
                        s.status or "",
                    ]
                )


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


_COLUMNS = (
    "run",
    "requests",
    "errors",
    "rejected",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "mean ms",
)


def format_table(runs: Sequence[RunResult]) -> str:
    rows: list[Sequence[str]] = [_COLUMNS]
    for run in runs:
        s, lat = run.summary, run.summary.latency_ms
        rows.append(
            (
                run.label,
                str(s.requests),
                str(s.errors),
                str(s.rejected),
                fmt(s.throughput_rps, 2),
                fmt(lat.p50),
                fmt(lat.p90),
                fmt(lat.p99),
                fmt(lat.max),
                fmt(lat.mean),
            )
        )
    return format_grid(rows)


def format_grid(rows: Sequence[Sequence[str]]) -> str:
    """A header row, a rule and the rows: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells)

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[1:]]
    return "\n".join(out)


def format_ratios(items: Sequence[dict[str, Any]]) -> str:
    lines = []
    for r in items:
        lines.append(
            f"{r['served']} / {r['baseline']}: latency p50 x{fmt(r['latency_p50'], 3)}, "
            f"mean x{fmt(r['latency_mean'], 3)}, p99 x{fmt(r['latency_p99'], 3)}, "
            f"throughput x{fmt(r['throughput'], 3)}, p50 overhead {fmt(r['overhead_ms_p50'], 2)} ms"
        )
    return "\n".join(lines)


def format_errors(runs: Sequence[RunResult]) -> str:
    lines = []
    for run in runs:
        for cls, count in run.summary.errors_by_class.items():
            example = run.summary.error_examples.get(cls, "")
            lines.append(f"{run.label}: {count} x {cls}: {example}")
    return "\n".join(lines)
