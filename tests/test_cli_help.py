"""``sam-triton <command> --help``: every option with a default says what it is (issue 24, 7),
and the help points only at documents a user has."""

from __future__ import annotations

import argparse
import re

import pytest
from sam_triton.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help as --help prints it, whitespace collapsed (lines wrap anywhere)."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def _states_a_default(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_states_its_default(command: str) -> None:
    parser = _subparsers()[command]
    missing = []
    for action in parser._actions:
        if not action.option_strings or not _states_a_default(action):
            continue
        text = _rendered(parser, action)
        value = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
        # The value itself, next to the word "default" (a help may name it in its own words).
        if "default" not in text.lower() or value not in text:
            missing.append(f"{action.option_strings[-1]} (default {value}): {text!r}")
    assert not missing, f"sam-triton {command} --help hides defaults:\n" + "\n".join(missing)


def test_help_names_the_values_the_issue_found_missing() -> None:
    """What a new user read without a value before: spelled out now."""
    subparsers = _subparsers()
    expected = {
        "serve": ["--repository", "--grpc-port", "--http-port", "--metrics-port", "--ready-timeout",
                  "--log-verbose", "--replica-base-port", "--envoy-admin-port"],
        "export": ["--max-prompts", "--max-points", "--max-batch", "--instances", "--precision"],
        "bench": ["--background-embedders", "--background-automask"],
        "automask": ["--points-per-side", "--crop-n-layers", "--min-mask-region-area"],
    }  # fmt: skip
    for command, options in expected.items():
        parser = subparsers[command]
        help_text = " ".join(parser.format_help().split())
        for option in options:
            (action,) = [a for a in parser._actions if option in a.option_strings]
            shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            assert re.search(rf"{re.escape(option)} \S+ .*?\(?default:? {re.escape(shown)}\b", help_text), (
                command,
                option,
            )
    # Its default is the served model family's generator's: the help names both.
    automask = " ".join(subparsers["automask"].format_help().split())
    assert re.search(r"--pred-iou-thresh \S+ .*default: .*0\.88 for SAM 1, 0\.8 for SAM 2", automask)


def test_a_flag_or_an_unset_option_gets_no_default_noise() -> None:
    help_text = _subparsers()["segment"].format_help()
    assert "default: None" not in help_text and "default: False" not in help_text


def test_help_cites_no_document_outside_the_repository() -> None:
    for command, parser in _subparsers().items():
        text = parser.format_help()
        assert "SPEC" not in text and "shared/" not in text, command


def test_the_project_cites_no_document_outside_it() -> None:
    """The system contract this project was built from is not part of it (issue 24, 8): what a
    reader needs is in README.md; citing the contract's sections or its folder sends them nowhere."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cited = re.compile(r"\bSPEC(\.md| section| \d)|\.\./shared/")
    suffixes = {".py", ".md", ".pbtxt", ".yaml", ".yml", ".json", ".toml", ".sh", ".txt", ""}
    files = ("README.md", "BENCHMARKS.md", "Makefile", "pyproject.toml", "mkdocs.yml")
    places = [root / name for name in files]
    folders = ("client", "common", "server", "export", "bench", "tests", "deploy", "docker", "benchmarks",
               "docs")
    for folder in folders:
        places += [p for p in (root / folder).rglob("*") if p.is_file() and p.suffix in suffixes]
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in places
        if path.exists() and "egg-info" not in str(path)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if cited.search(line)
    ]
    assert found == []
