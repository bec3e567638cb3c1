"""PNG plots of a benchmark: latency over time, latency histogram, throughput vs latency.

matplotlib is imported inside :func:`write_plots` (with the non-interactive Agg backend) so the
SDK and the CLI's ``--help`` never pay for it, and a client-only install without matplotlib
still runs benchmarks (the CLI then skips the plots with a message).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runner import RunResult

LATENCY_OVER_TIME = "latency_over_time.png"
LATENCY_HISTOGRAM = "latency_histogram.png"
THROUGHPUT_VS_LATENCY = "throughput_vs_latency.png"


def _latency_over_time(plt: Any, runs: Sequence[RunResult], path: Path, title: str) -> None:
    # One time axis for all panels: a session's stages ran side by side on one clock.
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs) + 0.6), squeeze=False, sharex=True)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        for warm, color in ((True, "0.7"), (False, "tab:blue")):
            pts = [s for s in run.samples if s.warmup == warm and s.ok]
            ax.scatter(
                [s.end for s in pts],
                [s.latency * 1e3 for s in pts],
                s=4,
                c=color,
                alpha=0.6,
                label="warm-up" if warm else "requests",
            )
        for label, color, marked in (
            ("errors", "tab:red", [s for s in run.samples if not s.ok and not s.rejected]),
            ("rejected", "tab:purple", [s for s in run.samples if s.rejected]),
        ):
            if marked:
                ax.scatter(
                    [s.end for s in marked],
                    [s.latency * 1e3 for s in marked],
                    s=10,
                    c=color,
                    marker="x",
                    label=label,
                )
        points = [p for p in run.timeline if p.completed]
        ax.plot(
            [p.t + 0.5 for p in points],
            [p.p50_ms for p in points],
            c="tab:orange",
            lw=1.5,
            label="p50 per second",
        )
        ax.plot(
            [p.t + 0.5 for p in points],
            [p.p99_ms for p in points],
            c="tab:red",
            lw=1,
            ls="--",
            label="p99 per second",
        )
        ax.set_title(f"{run.label}: {run.summary.throughput_rps:.2f} req/s", fontsize=9)
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time since start (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _histogram(plt: Any, runs: Sequence[RunResult], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [(run, [s.latency * 1e3 for s in run.samples if s.ok and not s.warmup]) for run in runs]
    values = [v for _, vs in series for v in vs if v > 0]
    if values:
        lo, hi = min(values), max(values)
        # Served and in-process runs can differ by orders of magnitude: log bins then.
        log = hi / lo > 20
        bins = np.geomspace(lo, hi * 1.001, 50) if log else np.linspace(lo, hi * 1.001 + 1e-9, 50)
        for run, vs in series:
            if vs:
                ax.hist(
                    vs,
                    bins=bins,
                    histtype="step",
                    lw=1.5,
                    label=f"{run.label} (p50 {run.summary.latency_ms.p50:.1f} ms)",
                )
        if log:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweep(plt: Any, runs: Sequence[RunResult], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r.summary.throughput_rps for r in runs]
    for stat, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        ax.plot(xs, [getattr(r.summary.latency_ms, stat) for r in runs], style, label=stat)
    for r, x in zip(runs, xs, strict=True):
        ax.annotate(
            r.level.label,
            (x, r.summary.latency_ms.p50),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(
    served: Sequence[RunResult],
    baselines: Sequence[RunResult],
    directory: Path,
    title: str,
    *,
    sweep: bool = True,
) -> list[str]:
    """Write the PNGs into ``directory``; returns their file names.

    The throughput-vs-latency plot needs several served load levels (``--sweep``); ``sweep``
    False leaves it out when the served runs are not load levels (the session's stages).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    runs = [*served, *baselines]
    written = []
    if runs:
        _latency_over_time(plt, runs, directory / LATENCY_OVER_TIME, title)
        _histogram(plt, runs, directory / LATENCY_HISTOGRAM, title)
        written += [LATENCY_OVER_TIME, LATENCY_HISTOGRAM]
    if sweep and len(served) > 1:
        _sweep(plt, served, directory / THROUGHPUT_VS_LATENCY, title)
        written.append(THROUGHPUT_VS_LATENCY)
    return written
