"""The session scenario's own results: the ``"session"`` section of ``results.json`` and its table.

Per stage (milliseconds, bytes)::

    "session": {"options": {...}, "users_started", "users_turned_away",
                "cache": {"embeds", "hits", "hit_rate"},
                "drag": {"clicks", "superseded"},
                "stages": {"click": {"requests", "ok", "errors", "rejected", "failed",
                                     "throughput_rps", "latency_ms": {p50, p90, p99, mean, max, ...},
                                     "wire": {"rpcs", "sent_bytes", "received_bytes",
                                              "sent_bytes_per_request", "received_bytes_per_request"}},
                           ...}}

``errors`` = ``rejected`` (refused for load, :attr:`~.loadgen.Sample.rejected`) + ``failed``.
Everything else about a stage (timeline, error classes) is in ``runs``, as for any scenario.
"""

from __future__ import annotations

from typing import Any

from .report import fmt, format_grid
from .session import SessionResult, WireCount


def _per_request(total: int, requests: int) -> float:
    return total / requests if requests else float("nan")


def _wire(wire: WireCount, requests: int) -> dict[str, Any]:
    return {
        "rpcs": wire.rpcs,
        "sent_bytes": wire.sent_bytes,
        "received_bytes": wire.received_bytes,
        "sent_bytes_per_request": _per_request(wire.sent_bytes, requests),
        "received_bytes_per_request": _per_request(wire.received_bytes, requests),
    }


def stage_records(result: SessionResult) -> dict[str, dict[str, Any]]:
    records = {}
    for run in result.runs:
        s = run.summary
        records[run.kind] = {
            "requests": s.requests,
            "ok": s.ok,
            "errors": s.errors + s.rejected,
            "rejected": s.rejected,
            "failed": s.errors,
            "throughput_rps": s.throughput_rps,
            "latency_ms": vars(s.latency_ms),
            "wire": _wire(result.wire[run.kind], s.requests),
        }
    return records


def session_record(result: SessionResult) -> dict[str, Any]:
    """The ``"session"`` section (NaN is turned into null by the results writer)."""
    return {
        "options": result.options.describe(),
        "users_started": result.users_started,
        "users_turned_away": result.users_turned_away,
        "cache": {"embeds": result.embeds, "hits": result.cache_hits, "hit_rate": result.cache_hit_rate},
        "drag": {"clicks": result.drag_clicks, "superseded": result.superseded},
        "stages": stage_records(result),
    }


def format_session(result: SessionResult) -> str:
    """Per stage: rejected vs failed and the bytes per request; then the users and the cache."""
    rows = [("stage", "rejected", "failed", "rpcs", "sent KiB/req", "recv KiB/req", "sent MiB", "recv MiB")]
    for stage, r in stage_records(result).items():
        wire = r["wire"]
        rows.append(
            (
                stage,
                str(r["rejected"]),
                str(r["failed"]),
                str(wire["rpcs"]),
                fmt(wire["sent_bytes_per_request"] / 1024, 1),
                fmt(wire["received_bytes_per_request"] / 1024, 1),
                fmt(wire["sent_bytes"] / 2**20, 2),
                fmt(wire["received_bytes"] / 2**20, 2),
            )
        )
    rate = result.cache_hit_rate
    lines = [
        format_grid(rows),
        f"users started: {result.users_started}, turned away: {result.users_turned_away}; "
        f"embed cache hits: {result.cache_hits}/{result.embeds}"
        + (f" ({rate:.0%})" if result.embeds else ""),
    ]
    if result.options.drag_interval is not None:
        lines.append(
            f"drag: {result.drag_clicks} clicks sent every {result.options.drag_interval * 1e3:g} ms, "
            f"{result.superseded} superseded by the next before their answer"
        )
    return "\n".join(lines)
