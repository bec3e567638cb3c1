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
from typing import Any

# (module, what to install when it is missing). Order is the order in --help.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "sam_triton_export.cli",  # export, verify
    "sam_triton_server.launcher.cli",  # serve
    "sam_triton.cli.segment",  # segment
    "sam_triton.cli.automask",  # automask
    "sam_triton.cli.track",  # track
    "sam_triton_bench.cli",  # bench
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default.

    Flags (default off), repeatable options (default none) and options without a default
    (absent means off) state nothing; every other option shows the value it runs with.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            # Identity, not ==: a default of 0 is a value to state (0 == False).
            or any(default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or default == []
        ):
            return action.help
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


class _SubcommandParser(argparse.ArgumentParser):
    """Every subcommand's parser, with the formatter above (no subcommand has to ask for it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-triton",
        description="Segment Anything on NVIDIA Triton: export, serve, segment, benchmark.",
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_SubcommandParser
    )
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
