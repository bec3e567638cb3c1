"""``sam-triton bench``: load-test a sam-triton server; compare with in-process baselines.

    sam-triton bench --url localhost:8001 --scenario click --concurrency 4 --duration 30
    sam-triton bench --scenario encode --rate 2 --duration 60 --output runs/encode-open
    sam-triton bench --scenario click --concurrency 8 --sweep --duration 15
    sam-triton bench --scenario encode --concurrency 1 --duration 60 \\
        --baseline onnxruntime --baseline reference --repository model_repository
    sam-triton bench --perf-analyzer-data pa_inputs/

Registering the subcommand imports nothing heavy; the handler imports the bench modules.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam_triton.cli.connection import (
    add_connection_arguments,
    connection_options,
    next_step,
    redact_arguments,
    redact_argv,
)

from . import remote_cli, session_cli, video_cli
from .arguments import non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from sam_triton.errors import SamTritonError

    from .baselines import BaselineSpec
    from .images import BenchImage
    from .runner import BenchConfig, LoadLevel, RunResult

SCENARIO_CHOICES = ("encode", "click", "oneshot", "automask", "session", "remote", "video")
BASELINE_CHOICES = ("reference", "onnxruntime")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="load-test a server (latency percentiles, throughput, plots)",
        description="Closed-loop (--concurrency) or open-loop Poisson (--rate) load over gRPC; "
        "writes results.json, samples.csv and PNG plots to --output and prints a table. "
        "--baseline runs the same scenario in-process in the same run for served/baseline ratios.",
    )
    parser.add_argument(
        "--url", default="localhost:8001", help="gRPC endpoint HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIO_CHOICES,
        default="click",
        help="encode: embed(); click: one point on a pre-embedded image; oneshot: "
        "image+point via the `sam` ensemble; automask: automatic masks; session: virtual users "
        "embedding then clicking, with background load; remote: a photo over an emulated link; video: "
        "live streams tracked by sam_video (see their options below) (default %(default)s)",
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="closed loop: N requests in flight, back to back (default 1)",
    )
    load.add_argument(
        "--rate",
        type=positive_float,
        metavar="R",
        help="open loop: Poisson arrivals at R requests/s; latency counts from the "
        "scheduled arrival, so queueing is not hidden",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="measured seconds per load level (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_float,
        default=2.0,
        metavar="S",
        help="unmeasured seconds first (default %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        metavar="N",
        help="cut --duration into N rounds and run every series (load levels, baselines) once "
        "per round, interleaved, so a shared machine's slow spells hit all of them alike; "
        "each round has its own warm-up (default %(default)s)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="closed loop at concurrency 1, 2, 4, ... up to --concurrency; adds a throughput-vs-latency plot",
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="images to use (default: built-in synthetic images incl. 1411x1411)",
    )
    parser.add_argument("--max-images", type=positive_int, metavar="N", help="use the first N images only")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench_results"),
        metavar="DIR",
        help="where results.json, samples.csv and plots go (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=600.0,
        help="deadline per request in seconds (a full automask run on a CPU takes minutes; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=positive_float,
        default=30.0,
        help="seconds to wait for the server and models to be ready (default %(default)s)",
    )
    parser.add_argument(
        "--max-outstanding",
        type=positive_int,
        default=1024,
        help="open loop: cap on requests in flight (waiting counts as latency)",
    )
    parser.add_argument("--schedule-seed", type=int, default=0, help="seed of the Poisson arrivals")
    parser.add_argument(
        "--client-embeddings",
        action="store_true",
        help="stateless SDK mode: embeddings come back to the client and travel with every click "
        "(default: the server holds them and a click sends only its prompt)",
    )
    parser.add_argument("--single-mask", action="store_true", help="multimask_output=False for clicks")
    parser.add_argument("--points-per-side", type=positive_int, default=32, help="automask grid (default 32)")
    parser.add_argument(
        "--points-per-batch", type=positive_int, default=64, help="automask batch (default 64)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    base = parser.add_argument_group("in-process baselines")
    base.add_argument(
        "--baseline",
        action="append",
        choices=BASELINE_CHOICES,
        default=[],
        help="also run the scenario in-process: reference = segment_anything "
        "(torch), onnxruntime = the exported ONNX files; repeatable",
    )
    base.add_argument(
        "--repository",
        type=Path,
        help="model repository: the ONNX files (onnxruntime) and export.json, which "
        "supplies --model-type and the weights when they are not given",
    )
    base.add_argument("--model-type", help="SAM variant for --baseline reference (vit_b, ..., tiny-test)")
    weights = base.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help="checkpoint for --baseline reference")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights for --baseline reference (see --seed)",
    )
    base.add_argument("--seed", type=int, help="seed of --random-weights (default: export.json's, else 0)")
    base.add_argument(
        "--ort-threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads of the onnxruntime baseline (0: default)",
    )

    parser.add_argument(
        "--perf-analyzer-data",
        type=Path,
        metavar="DIR",
        help="only write perf_analyzer --input-data JSON files for the models to DIR "
        "(and the perf_analyzer commands to DIR/README.txt), then exit",
    )
    session_cli.add_arguments(parser)
    remote_cli.add_arguments(parser)
    video_cli.add_arguments(parser)
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


# --------------------------------------------------------------------------- building blocks


def _levels(args: argparse.Namespace) -> list[LoadLevel]:
    from .runner import LoadLevel, sweep_levels

    if args.rate is not None:
        return [LoadLevel("open", rate=args.rate)]
    concurrency = args.concurrency or 1
    return sweep_levels(concurrency) if args.sweep else [LoadLevel("closed", concurrency=concurrency)]


def _baseline_specs(args: argparse.Namespace) -> list[BaselineSpec]:
    from .baselines import BaselineSpec, resolve_weights

    specs = []
    for kind in dict.fromkeys(args.baseline):  # de-duplicated, order kept
        seed = args.seed if args.seed is not None else (0 if args.random_weights else None)
        spec = BaselineSpec(
            kind=kind,
            model_type=args.model_type,
            checkpoint=args.checkpoint,
            random_seed=seed,
            repository=args.repository,
            threads=args.ort_threads,
            model=args.model,
        )
        # Fail on a missing argument now, not after minutes of served measurements.
        if kind == "reference":
            resolve_weights(spec)
        elif args.repository is None:
            raise ValueError("--baseline onnxruntime needs --repository (the exported model repository)")
        specs.append(spec)
    return specs


def _config(args: argparse.Namespace, baselines: list[BaselineSpec]) -> BenchConfig:
    from .runner import BenchConfig
    from .scenarios import ScenarioOptions

    return BenchConfig(
        url=args.url,
        scenario=args.scenario,
        levels=_levels(args),
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        seed=args.schedule_seed,
        max_outstanding=args.max_outstanding,
        timeout=args.timeout,
        ready_timeout=args.ready_timeout,
        options=ScenarioOptions(
            multimask_output=not args.single_mask,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
        ),
        baselines=baselines,
        progress=not args.no_progress,
        server_embeddings=not args.client_embeddings,
        connection=connection_options(args),
    )


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _header(
    args: argparse.Namespace, config: BenchConfig, images: list[BenchImage], load_start: list[float] | None
) -> dict[str, Any]:
    from sam_triton import __version__

    return {
        "tool": "sam-triton bench",
        "version": __version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["sam-triton", *redact_argv(sys.argv[1:])] if "bench" in sys.argv[1:2] else None,
        "arguments": redact_arguments(
            {k: str(v) if isinstance(v, Path) else v for k, v in sorted(vars(args).items()) if k != "handler"}
        ),
        "config": {
            "url": config.url,
            "scenario": config.scenario,
            "levels": [lv.describe() for lv in config.levels],
            "duration_s": config.duration,
            "warmup_s": config.warmup,
            "rounds": config.rounds,
            "schedule_seed": config.seed,
            "max_outstanding": config.max_outstanding,
            "timeout_s": config.timeout,
            "server_embeddings": config.server_embeddings,
            "options": vars(config.options),
            "baselines": [
                {k: str(v) if isinstance(v, Path) else v for k, v in vars(b).items()}
                for b in config.baselines
            ],
        },
        "environment": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            # The machines are shared: a busy one explains odd numbers later.
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
        },
        "images": [im.describe() for im in images],
    }


def write_outputs(
    args: argparse.Namespace,
    config: BenchConfig,
    images: list[BenchImage],
    served: list[RunResult],
    baselines: list[RunResult],
    load_start: list[float] | None,
    session: dict[str, Any] | None = None,
    interrupted: bool = False,
    video: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """samples.csv, the plots and results.json (with the ``session`` or ``video`` section when
    given; ``"interrupted": true`` when Ctrl-C cut the run short)."""
    from .report import build_results, write_json, write_samples_csv

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    write_samples_csv([*served, *baselines], out / "samples.csv")
    plots: list[str] = []
    if not args.no_plots:
        try:
            from .plots import write_plots

            title = f"sam-triton bench: {config.scenario} @ {config.url}"
            plots = write_plots(served, baselines, out, title, sweep=session is None and video is None)
        except ImportError as exc:
            print(
                f"plots skipped: matplotlib is not installed ({exc}); pip install sam-triton[bench]",
                file=sys.stderr,
            )
    header = _header(args, config, images, load_start)
    if session is not None:
        header["session"] = session
    if video is not None:
        header["video"] = video
    if interrupted:
        header["interrupted"] = True
    document = build_results(
        header=header,
        served=served,
        baselines=baselines,
        files={"samples": "samples.csv", "plots": plots},
    )
    write_json(document, out / "results.json")
    return document


# --------------------------------------------------------------------------- handler


def cannot_benchmark(args: argparse.Namespace, url: str, exc: SamTritonError) -> int:
    """Say why the server could not be benchmarked and what to do next; the exit status (1)."""
    hint = next_step(exc, args)
    step = f"\n  -> {hint}" if hint else ""
    print(f"sam-triton bench: cannot benchmark {url}: {exc}{step}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from sam_triton.errors import SamTritonError

    from .images import bench_images
    from .scenarios import ScenarioUnavailable

    try:
        images = bench_images(args.images, args.max_images)
    except (FileNotFoundError, SamTritonError) as exc:
        print(f"sam-triton bench: {exc}", file=sys.stderr)
        return 2
    if args.perf_analyzer_data is not None:
        from .perf_analyzer import write_perf_analyzer_data

        written = write_perf_analyzer_data(args.perf_analyzer_data, images, args.url, model=args.model)
        print("\n".join(f"{model}: {path}" for model, path in written.items()))
        print((args.perf_analyzer_data / "README.txt").read_text())
        return 0
    if args.scenario == "session":
        return session_cli.run(args, images, _loadavg())
    if args.scenario == "remote":
        return remote_cli.run(args, images, _loadavg())
    if args.scenario == "video":
        return video_cli.run(args, images, _loadavg())
    if args.sweep and args.rate is not None:
        print("sam-triton bench: --sweep goes over concurrencies; use it with --concurrency", file=sys.stderr)
        return 2
    try:
        config = _config(args, _baseline_specs(args))
    except (ValueError, ScenarioUnavailable) as exc:
        print(f"sam-triton bench: {exc}", file=sys.stderr)
        return 2

    from .report import all_ratios, format_errors, format_ratios, format_table
    from .runner import run_all

    load_start = _loadavg()
    try:
        served, baselines, interrupted = run_all(config, images)
    except KeyboardInterrupt:  # before the first measured request (or a second Ctrl-C)
        print("\nsam-triton bench: interrupted; nothing was measured, nothing written", file=sys.stderr)
        return 130
    except ScenarioUnavailable as exc:
        # Not a failure of the server: this installation cannot run the scenario (yet).
        print(f"sam-triton bench: scenario {config.scenario!r} skipped: {exc}", file=sys.stderr)
        return 0
    except SamTritonError as exc:
        return cannot_benchmark(args, config.url, exc)
    if interrupted and not served and not baselines:
        print("\nsam-triton bench: interrupted; nothing was measured, nothing written", file=sys.stderr)
        return 130
    write_outputs(args, config, images, served, baselines, load_start, interrupted=interrupted)
    runs = [*served, *baselines]
    print(
        f"\n{config.scenario} @ {config.url}, {len(images)} image(s), "
        f"{config.warmup:g}s warm-up + {config.duration:g}s per run"
        + (f" in {config.rounds} interleaved rounds" if config.rounds > 1 else "")
    )
    notes = {k: v for r in served for k, v in r.notes.items()}
    if notes:
        print("  " + ", ".join(f"{k}: {v}" for k, v in notes.items()))
    print(format_table(runs))
    if baselines:
        print("\nserved / in-process (ratios from this run):")
        print(format_ratios(all_ratios(served, baselines)))
    errors = format_errors(runs)
    if errors:
        print("\nerrors:\n" + errors)
    print(f"\nresults: {args.output / 'results.json'}")
    if interrupted:
        measured = sum(r.summary.requests for r in runs)
        print(
            f"sam-triton bench: interrupted (Ctrl-C): the {measured} requests measured before it are "
            f"in the table above and in {args.output} (results.json says \"interrupted\": true; "
            "series that had not started are left out)",
            file=sys.stderr,
        )
        return 130
    return 0
