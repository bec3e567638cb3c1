"""``sam-triton bench --scenario video``: its arguments and its handler.

    sam-triton bench --url localhost:8001 --scenario video --concurrency 4 --fps 5 \\
        --duration 20 --frame-deadline 0.4 --output video/

``--concurrency`` is the number of streams; each sends ``--fps`` x ``--duration`` frames after
its prompted first one. ``--timeout``, ``--ready-timeout``, ``--output`` and ``--no-plots``
keep their meaning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from .arguments import positive_float

if TYPE_CHECKING:
    from .images import BenchImage
    from .runner import BenchConfig
    from .video import VideoOptions, VideoResult


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"HxW, e.g. 240x320, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "video scenario (--scenario video: --concurrency live streams tracked by sam_video, "
        "one object clicked on each stream's first frame)"
    )
    group.add_argument(
        "--fps",
        type=positive_float,
        default=5.0,
        metavar="F",
        help="frames per second per stream, sent when due whatever the answers (default %(default)s)",
    )
    group.add_argument(
        "--frame-deadline",
        type=positive_float,
        metavar="S",
        help="seconds a frame may wait on the server before it is dropped (default: 1 / --fps)",
    )
    group.add_argument(
        "--video-size",
        type=_size,
        default="240x320",  # a string default goes through type= as a typed one would
        metavar="HxW",
        help="frame size (default %(default)s)",
    )
    group.add_argument(
        "--metrics-url",
        metavar="URL",
        help="the server's Prometheus endpoint, for sam_video_bytes (default: http://HOST:8002/metrics "
        "with --url's host; 'none': no memory figures)",
    )


def metrics_url(args: argparse.Namespace) -> str | None:
    if args.metrics_url is not None:
        return None if args.metrics_url == "none" else str(args.metrics_url)
    host = str(args.url).rsplit(":", 1)[0] if ":" in str(args.url) else str(args.url)
    return f"http://{host}:8002/metrics"


def _options(args: argparse.Namespace) -> VideoOptions:
    from .video import VideoOptions

    return VideoOptions(
        streams=args.concurrency or 1,
        fps=args.fps,
        frames=max(1, round(args.fps * args.duration)),
        frame_deadline=args.frame_deadline,
        size=args.video_size,
    )


def _config(args: argparse.Namespace, opts: VideoOptions) -> BenchConfig:
    from sam_triton.cli.connection import connection_options

    from .runner import BenchConfig, LoadLevel

    return BenchConfig(
        url=args.url,
        scenario="video",
        levels=[LoadLevel("open", rate=opts.fps * opts.streams)],
        duration=args.duration,
        warmup=0.0,
        timeout=args.timeout,
        ready_timeout=args.ready_timeout,
        progress=not args.no_progress,
        connection=connection_options(args),
    )


async def _measure(config: BenchConfig, opts: VideoOptions, metrics: str | None) -> VideoResult:
    from sam_triton.aio import AsyncSamClient

    from .progress import RunProgress
    from .runner import wait_for_server
    from .video import run_video

    client = AsyncSamClient(config.url, timeout=config.timeout, **config.connection)
    async with client:
        await wait_for_server(client, config, [client.config.models.video])
        label = f"video {opts.streams} stream(s) x {opts.fps:g} fps"
        progress = RunProgress(label, opts.frames / opts.fps, config.progress)
        async with progress.ticking():
            return await run_video(client, opts, metrics, on_sample=progress.on_sample)


def video_record(result: VideoResult) -> dict[str, Any]:
    """The ``"video"`` section of ``results.json`` (bytes: the server's ``sam_video_bytes``)."""
    total = result.totals()
    return {
        "options": result.options.describe(),
        "frames_sent": total.sent,
        "frames_answered": total.answered,
        "frames_dropped": total.dropped,
        "frames_failed": total.failed,
        "answered_in_order": total.in_order,
        "latency_ms": vars(result.run.summary.latency_ms),
        "memory": {
            "source": "sam_video_bytes (the server's video sessions' state)",
            "bytes_before": result.bytes_before,
            "bytes_after": result.bytes_after,
            "bytes_peak": result.bytes_peak,
            "bytes_per_stream": result.bytes_per_stream,
        },
        "streams": [vars(s) for s in result.streams],
    }


def format_video(result: VideoResult) -> str:
    total, lat = result.totals(), result.run.summary.latency_ms
    per_stream = result.bytes_per_stream
    memory = "no metrics" if per_stream is None else f"{per_stream / 2**20:.1f} MiB per stream"
    return (
        f"frames sent {total.sent}: answered {total.answered}, dropped {total.dropped}, "
        f"failed {total.failed}; answered in order: {'yes' if total.in_order else 'NO'}\n"
        f"latency of answered frames (from when due): p50 {lat.p50:.0f} ms, p90 {lat.p90:.0f} ms, "
        f"p99 {lat.p99:.0f} ms\n"
        f"server memory (sam_video_bytes after - before): {memory}"
    )


def run(args: argparse.Namespace, images: list[BenchImage], load_start: list[float] | None) -> int:
    from sam_triton.errors import SamTritonError

    from .cli import cannot_benchmark, write_outputs
    from .report import format_errors, format_table

    if args.rate is not None or args.sweep or args.baseline or args.rounds != 1:
        print(
            "sam-triton bench: the video scenario sets its load with --concurrency (streams) and --fps; "
            "it has no --rate, --sweep, baselines or rounds",
            file=sys.stderr,
        )
        return 2
    try:
        opts = _options(args)
    except ValueError as exc:
        print(f"sam-triton bench: {exc}", file=sys.stderr)
        return 2
    config = _config(args, opts)
    try:
        result = asyncio.run(_measure(config, opts, metrics_url(args)))
    except KeyboardInterrupt:
        print("\nsam-triton bench: interrupted; nothing written", file=sys.stderr)
        return 130
    except SamTritonError as exc:
        return cannot_benchmark(args, config.url, exc)
    write_outputs(args, config, images, [result.run], [], load_start, video=video_record(result))
    print(
        f"\nvideo @ {config.url}: {opts.streams} stream(s) at {opts.fps:g} frames/s, {opts.frames} frames "
        f"each after the prompted one, deadline {opts.deadline:g} s"
    )
    print(format_table([result.run]))
    print(format_video(result))
    errors = format_errors([result.run])
    if errors:
        print("\nerrors and drops:\n" + errors)
    print(f"\nresults: {args.output / 'results.json'}")
    return 0
