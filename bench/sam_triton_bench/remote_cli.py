"""``sam-triton bench --scenario remote``: its arguments and its handler.

    sam-triton bench --url localhost:8001 --scenario remote --link 100:20 --link 20:50 \\
        --rounds 5 --clicks 5 --max-images 1 --output remote/

``--images``, ``--max-images``, ``--rounds`` (photos per link and wire format), ``--clicks``,
``--single-mask``, ``--timeout`` and ``--output`` keep their meaning.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .images import BenchImage

DEFAULT_LINKS = ("100:20", "20:50")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "remote scenario (--scenario remote: a new JPEG photo and its clicks over a constrained link, "
        "the wire format before compact uploads and answers against today's)"
    )
    group.add_argument(
        "--link",
        action="append",
        metavar="MBIT:RTT_MS",
        help="an emulated link between the bench and the server, e.g. 20:50 for 20 Mbit/s each way "
        f"and a 50 ms round trip; repeat for several (default: {' and '.join(DEFAULT_LINKS)})",
    )


def run(args: argparse.Namespace, images: list[BenchImage], load_start: list[float] | None) -> int:
    from sam_triton.cli.connection import connection_options, redact_argv
    from sam_triton.errors import SamTritonError

    from .cli import cannot_benchmark
    from .link import Link
    from .remote import format_remote, run_remote

    try:
        links = [Link.parse(text) for text in (args.link or DEFAULT_LINKS)]
    except ValueError as exc:
        print(f"sam-triton bench: {exc}", file=sys.stderr)
        return 2
    options = {"timeout": args.timeout, **connection_options(args)}
    try:
        series = run_remote(
            args.url,
            images,
            links,
            args.rounds,
            args.clicks,
            multimask=not args.single_mask,
            nonce=secrets.randbits(62),
            client_options=options,
            log=lambda line: print(line, file=sys.stderr),
        )
    except SamTritonError as exc:
        return cannot_benchmark(args, args.url, exc)
    except KeyboardInterrupt:
        print("\nsam-triton bench: interrupted; nothing written", file=sys.stderr)
        return 130
    table = format_remote(series)
    print(
        f"\nremote @ {args.url}: {args.rounds} new photo(s) per link and wire format, "
        f"{args.clicks} clicks each"
    )
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "tool": "sam-triton bench",
        "scenario": "remote",
        "command": ["sam-triton", *redact_argv(sys.argv[1:])] if "bench" in sys.argv[1:2] else None,
        "images": [image.describe() for image in images],
        "loadavg_start": load_start,
        "series": [s.summary() for s in series],
        "samples": [vars(s) for s in series],
    }
    path = args.output / "results.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path}")
    return 0
