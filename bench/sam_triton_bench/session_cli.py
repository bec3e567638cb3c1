"""``sam-triton bench --scenario session``: its arguments and its handler.

    sam-triton bench --scenario session --users 16 --clicks 8 --think-time 0.5 \\
        --refine-fraction 0.25 --background-embedders 2 --background-automask 1 \\
        --points-per-side 8 --duration 60 --output out/
    sam-triton bench --scenario session --user-rate 0.5 --users 32 --duration 120

The shared options (``--url``, ``--duration``, ``--warmup``, ``--timeout``, ``--images``,
``--output``, ``--points-per-side`` for the background automatic masks, ...) keep their meaning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .arguments import fraction, non_negative_int, positive_float

if TYPE_CHECKING:
    from .images import BenchImage
    from .runner import BenchConfig
    from .session import SessionOptions, SessionResult

# Registering the arguments imports nothing heavy; the handler imports the rest.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "session scenario (--scenario session: virtual users embedding an image, then clicking)"
    )
    group.add_argument(
        "--users",
        type=int,
        default=4,
        metavar="N",
        help="users at all times (closed loop), or with --user-rate the most at a time (default %(default)s)",
    )
    group.add_argument(
        "--user-rate",
        type=float,
        metavar="R",
        help="open loop: users arrive at R per second (Poisson), each annotating one image",
    )
    group.add_argument(
        "--clicks", type=int, default=8, metavar="K", help="clicks per image (default %(default)s)"
    )
    group.add_argument(
        "--think-time",
        type=float,
        default=0.5,
        metavar="S",
        help="mean seconds before each click (default %(default)s)",
    )
    group.add_argument(
        "--drag-interval",
        type=positive_float,
        metavar="S",
        help="drag mode: each user sends a click every S seconds through LatestClick, a newer click "
        "cancelling the one in flight (0.016: a 60 Hz mouse); the drag stage times the answered "
        "clicks, superseded ones are counted (default: off, clicks after --think-time)",
    )
    group.add_argument(
        "--think-distribution",
        choices=("exponential", "uniform"),
        default="exponential",
        help="exponential with that mean, or uniform in [0, 2 x mean] (default %(default)s)",
    )
    group.add_argument(
        "--refine-fraction",
        type=fraction,
        default=0.25,
        metavar="P",
        help="share of clicks after the first that send the last mask as mask_input (default %(default)s)",
    )
    group.add_argument(
        "--reopen-fraction",
        type=fraction,
        default=0.0,
        metavar="P",
        help="share of images re-opened instead of fresh (measures the embedding cache; default %(default)s)",
    )
    group.add_argument(
        "--background-embedders",
        type=non_negative_int,
        default=0,
        metavar="B",
        help="users embedding fresh images back to back",
    )
    group.add_argument(
        "--background-automask",
        type=non_negative_int,
        default=0,
        metavar="A",
        help="automatic-mask jobs back to back (grid: --points-per-side)",
    )


def _options(args: argparse.Namespace) -> SessionOptions:
    from .session import SessionOptions

    return SessionOptions(
        users=args.users,
        user_rate=args.user_rate,
        clicks=args.clicks,
        think_time=args.think_time,
        drag_interval=args.drag_interval,
        think_distribution=args.think_distribution,
        refine_fraction=args.refine_fraction,
        reopen_fraction=args.reopen_fraction,
        background_embedders=args.background_embedders,
        background_automask=args.background_automask,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        multimask_output=not args.single_mask,
        seed=args.schedule_seed,
    )


def _config(args: argparse.Namespace, opts: SessionOptions) -> BenchConfig:
    """The shared run description (the results header is written from it)."""
    from sam_triton.cli.connection import connection_options

    from .runner import BenchConfig
    from .scenarios import ScenarioOptions

    return BenchConfig(
        url=args.url,
        scenario="session",
        levels=[opts.level],
        duration=args.duration,
        warmup=args.warmup,
        seed=args.schedule_seed,
        max_outstanding=args.users,
        timeout=args.timeout,
        ready_timeout=args.ready_timeout,
        options=ScenarioOptions(
            multimask_output=opts.multimask_output,
            points_per_side=opts.points_per_side,
            points_per_batch=opts.points_per_batch,
            content_nonce=opts.content_nonce,
        ),
        progress=not args.no_progress,
        server_embeddings=not args.client_embeddings,
        connection=connection_options(args),
    )


async def _measure(config: BenchConfig, opts: SessionOptions, images: Sequence[BenchImage]) -> SessionResult:
    from sam_triton.aio import AsyncSamClient

    from .progress import RunProgress
    from .runner import wait_for_server
    from .session import count_rpc, run_session

    client = AsyncSamClient(
        config.url,
        timeout=config.timeout,
        server_embeddings=config.server_embeddings,
        rpc_observer=count_rpc,
        **config.connection,
    )
    async with client:
        models = None  # the client's own
        if opts.background_automask:
            from sam_triton._core import default_models
            from sam_triton.automask import RemoteAutomaticMaskGenerator

            models = [*default_models(client.config), RemoteAutomaticMaskGenerator(client).model]
        await wait_for_server(client, config, models)
        label = f"session {opts.level.label} users"
        progress = RunProgress(label, config.warmup + config.duration, config.progress)
        async with progress.ticking():
            return await run_session(
                client,
                images,
                opts,
                duration=config.duration,
                warmup=config.warmup,
                on_sample=progress.on_sample,
            )


def _checked_options(args: argparse.Namespace) -> SessionOptions | str:
    """The session's options, or what is wrong with the arguments."""
    if args.concurrency is not None or args.rate is not None or args.sweep:
        return (
            "the session scenario sets its load with --users / --user-rate, not --concurrency/--rate/--sweep"
        )
    if args.baseline or args.rounds != 1:
        return "the session scenario has no in-process baselines or rounds"
    try:
        return _options(args)
    except ValueError as exc:
        return str(exc)


def run(args: argparse.Namespace, images: list[BenchImage], load_start: list[float] | None) -> int:
    from sam_triton.errors import SamTritonError

    from .cli import cannot_benchmark, write_outputs
    from .report import format_errors, format_table
    from .session_report import format_session, session_record

    opts = _checked_options(args)
    if isinstance(opts, str):
        print(f"sam-triton bench: {opts}", file=sys.stderr)
        return 2
    config = _config(args, opts)
    try:
        result = asyncio.run(_measure(config, opts, images))
    except KeyboardInterrupt:  # before the users started (or a second Ctrl-C)
        print("\nsam-triton bench: interrupted; nothing was measured, nothing written", file=sys.stderr)
        return 130
    except SamTritonError as exc:
        return cannot_benchmark(args, config.url, exc)
    if result.interrupted and not result.runs:
        print("\nsam-triton bench: interrupted; nothing was measured, nothing written", file=sys.stderr)
        return 130
    record, interrupted = session_record(result), result.interrupted
    write_outputs(args, config, images, result.runs, [], load_start, session=record, interrupted=interrupted)
    print(
        f"\nsession @ {config.url}: {opts.level.label} users, {opts.clicks} clicks each, "
        f"{opts.background_embedders} background embedder(s), {opts.background_automask} automask job(s); "
        f"{config.warmup:g}s warm-up + {config.duration:g}s"
    )
    print(format_table(result.runs))
    print(format_session(result))
    errors = format_errors(result.runs)
    if errors:
        print("\nerrors:\n" + errors)
    print(f"\nresults: {args.output / 'results.json'}")
    if result.interrupted:
        measured = sum(r.summary.requests for r in result.runs)
        print(
            f"sam-triton bench: interrupted (Ctrl-C): the {measured} requests measured before it are "
            f"in the table above and in {args.output} (results.json says \"interrupted\": true)",
            file=sys.stderr,
        )
        return 130
    return 0
