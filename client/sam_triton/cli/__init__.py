"""The ``sam-triton`` console command.

Each subcommand lives in the package that owns its job and exposes
``register(subparsers)``; registering imports nothing heavy (torch, onnx, tritonserver
are imported inside the handlers), so ``sam-triton --help`` works on a client-only install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module, what to install when it is missing). Order is the order in --help.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "sam_triton_export.cli",  # export, verify
    "sam_triton_server.cli",  # serve
    "sam_triton.cli.segment",  # segment
    "sam_triton.cli.automask",  # automask
    "sam_triton_bench.cli",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-triton",
        description="Segment Anything on NVIDIA Triton: export, serve, segment, benchmark.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
