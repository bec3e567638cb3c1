"""MkDocs hook: the pages (and page parts) that are written from the code at build time.

Nothing here is hand-copied: the CLI reference comes from the argparse parsers that
``sam-triton`` runs, the SDK reference from ``sam_triton.__all__`` (mkdocstrings renders each
name from its docstring and type hints), the served tensors from ``sam_triton_common.contract``,
the error table from ``sam_triton.errors``' own mapping, and the benchmark and deploy pages
from BENCHMARKS.md and deploy/README.md, which stay where their authors and tests keep them.
A name added to the code appears in the site at the next build; one removed disappears.

Hand-written pages pull a generated part in with an HTML comment on a line of its own,
``<!-- generated: NAME -->`` (NAME one of ``PARTS`` below); an unknown NAME fails the build.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]

# Generated page -> the function that writes it.
PAGES: dict[str, Callable[[], str]] = {}
# Generated parts of hand-written pages -> the function that writes them.
PARTS: dict[str, Callable[[], str]] = {}


def _page(uri: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def register(function: Callable[[], str]) -> Callable[[], str]:
        PAGES[uri] = function
        return function

    return register


def _part(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def register(function: Callable[[], str]) -> Callable[[], str]:
        PARTS[name] = function
        return function

    return register


def _cell(text: str) -> str:
    """Text for one Markdown table cell: HTML-escaped, pipes and newlines made harmless."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|").replace("*", "\\*")


def _load_sibling(name: str) -> Any:
    """A module beside this hook (MkDocs loads hooks by path, so their folder is not importable)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_roles = _load_sibling("sphinx_roles")


def _doc(obj: Any) -> str:
    """An object's docstring, with its Sphinx roles as Markdown code (as the reference shows them)."""
    return _roles.as_markdown(inspect.getdoc(obj) or "")


# --------------------------------------------------------------------------- the CLI


def _argument_name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(f"`{option}`" for option in action.option_strings)
    takes_value = action.nargs != 0
    if takes_value:
        metavar = action.metavar or action.dest.upper()
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        names += f" `{metavar}`"
    return names


def _argument_default(action: argparse.Action) -> str:
    default = action.default
    # A flag's default is only the other side of the switch; positionals have none.
    if not action.option_strings or action.nargs == 0:
        return ""
    if any(default is nothing for nothing in (None, False, argparse.SUPPRESS)):
        return ""
    if default == []:
        return ""
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def _argument_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""  # noqa: SLF001
    text = text.strip()
    if text and not text.endswith((".", ")")):
        text += "."
    if action.choices is not None and not isinstance(action.choices, dict):
        text += " Choices: " + ", ".join(str(choice) for choice in action.choices) + "."
    if action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction):  # noqa: SLF001
        text += " Repeatable."
    return _cell(text)


def _command_section(name: str, summary: str, parser: argparse.ArgumentParser) -> str:
    lines = [f"## `sam-triton {name}`", ""]
    if summary:
        lines += [_cell(summary), ""]
    if parser.description and parser.description != summary:
        lines += [_cell(parser.description), ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    for group in parser._action_groups:  # noqa: SLF001
        actions = [action for action in group._group_actions if not isinstance(action, argparse._HelpAction)]  # noqa: SLF001
        if not actions:
            continue
        title = group.title or "arguments"
        lines += [f"**{title[0].upper()}{title[1:]}**", ""]
        if group.description:
            lines += [_cell(group.description), ""]
        lines += ["| argument | default | meaning |", "| --- | --- | --- |"]
        for action in actions:
            if action.help == argparse.SUPPRESS:
                continue
            cells = (_argument_name(action), _argument_default(action), _argument_help(parser, action))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if parser.epilog:
        lines += [_cell(parser.epilog), ""]
    return "\n".join(lines)


@_page("reference/cli.md")
def cli_reference() -> str:
    from sam_triton.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    summaries = {choice.dest: choice.help or "" for choice in subparsers._choices_actions}  # noqa: SLF001
    parts = [
        "# Command line reference",
        "",
        "Generated at build time from the argument parsers `sam-triton` runs "
        "(`sam_triton.cli.build_parser`): every command and option, with the default it runs with. "
        "`sam-triton COMMAND --help` prints the same. Exit status: 2 for input to fix in the "
        "command line, 1 for what the server or the connection did, 130 for Ctrl-C. "
        "The [command-line guide](../cli.md) shows them at work.",
        "",
    ]
    parts += [
        _command_section(name, summaries.get(name, ""), sub) for name, sub in subparsers.choices.items()
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- the SDK


@_page("reference/sdk.md")
def sdk_reference() -> str:
    import sam_triton

    names = list(sam_triton.__all__)
    parts = [
        "# Python SDK reference",
        "",
        "Generated at build time from the docstrings and type hints of every public name of "
        "`sam_triton` (its `__all__`, in that order). The [SDK guides](../sdk/predictor.md) "
        "show them at work.",
        "",
        "| name | what it is |",
        "| --- | --- |",
    ]
    for name in names:
        first = _doc(getattr(sam_triton, name)).split("\n\n")[0]
        parts.append(f"| [`{name}`](#sam_triton.{name}) | {_cell(first)} |")
    parts.append("")
    for name in names:
        parts += [f"::: sam_triton.{name}", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- the contract


def _shape(shape: tuple[int, ...]) -> str:
    return "[B, " + ", ".join(str(dim) for dim in shape) + "]"


@_page("reference/contract.md")
def contract_reference() -> str:
    from sam_triton_common import contract

    rows = [
        "# Served contract reference",
        "",
        "Generated at build time from `common/sam_triton_common/contract.py`, the one module "
        "that spells the served models' names, tensors, sizes and files (the exporter, the "
        "server and the SDK all import it; [Architecture](../architecture.md) says how).",
        "",
        "## Models",
        "",
        "| constant | model |",
        "| --- | --- |",
    ]
    for constant in ("ENCODER_MODEL", "DECODER_MODEL", "ENSEMBLE_MODEL", "SESSION_MODEL", "AUTOMASK_MODEL"):
        rows.append(f"| `{constant}` | `{getattr(contract, constant)}` |")
    rows += [
        "",
        "## Tensors per model family",
        "",
        "The model names and prompt tensors are the same for every family; a family adds "
        "encoder outputs (all of them decoder inputs), never renames one. FP32 unless said.",
        "",
        "| family | preprocessing | encoder inputs | encoder outputs | decoder inputs "
        "| encoder output bytes per image |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for family in contract.FAMILIES.values():
        outputs = "<br>".join(f"`{name}` {_shape(shape)}" for name, shape in family.features.items())
        rows.append(
            f"| `{family.name}` | `{family.preprocessing}` | "
            + ", ".join(f"`{name}`" for name in family.encoder_inputs)
            + f" | {outputs} | "
            + ", ".join(f"`{name}`" for name in family.decoder_inputs)
            + f" | {family.feature_bytes:,} |"
        )
    rows += [
        "",
        "## Every name",
        "",
        "::: sam_triton_common.contract",
        "    options:",
        "      show_root_heading: false",
        "",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- errors


@_part("errors-table")
def errors_table() -> str:
    import sam_triton
    from sam_triton import config, errors

    classes = [
        getattr(sam_triton, name)
        for name in sam_triton.__all__
        if inspect.isclass(getattr(sam_triton, name))
        and issubclass(getattr(sam_triton, name), sam_triton.SamTritonError)
    ]
    by_code: dict[type, list[str]] = {}
    for code, cls in errors._CODE_RULES.items():  # noqa: SLF001
        by_code.setdefault(cls, []).append(f"status `{code}`")
    for needle, cls in errors._MESSAGE_RULES:  # noqa: SLF001
        by_code.setdefault(cls, []).append(f"message containing “{needle}”")
    retried = set(config._RETRIED)  # noqa: SLF001
    lines = [
        "| error | is a | retried by the SDK | raised for | what it means |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cls in classes:
        bases = ", ".join(f"`{base.__name__}`" for base in cls.__bases__ if base is not object)
        lines.append(
            f"| [`{cls.__name__}`](../reference/sdk.md#sam_triton.{cls.__name__}) | {bases} | "
            f"{'yes' if cls in retried else 'no'} | {_cell('; '.join(by_code.get(cls, [])) or '-')} | "
            f"{_cell(_doc(cls))} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- included files

# Links in the included files that point at other files of the repository: the ones that
# became site pages map to them; others are shown as paths.
_INCLUDED = {"BENCHMARKS.md": "benchmarks.md", "deploy/README.md": "operating/deploy.md"}


def _include(relative: str) -> str:
    text = (ROOT / relative).read_text()
    source = ROOT / relative

    def relink(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve().relative_to(ROOT).as_posix()
        page = _INCLUDED.get(resolved)
        if page is None:
            return f"{label} (`{resolved}`)"
        here = Path(_INCLUDED[relative]).parent
        link = Path(page).relative_to(here) if page.startswith(str(here)) and str(here) != "." else page
        return f"[{label}]({link}{'#' + anchor if anchor else ''})"

    note = (
        f'!!! note "Included from `{relative}`"\n'
        f"    This page is `{relative}` of the repository, included at build time.\n\n"
    )
    body = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", relink, text)
    title, _, rest = body.partition("\n")
    return f"{title}\n\n{note}{rest}"


# Pictures written at build time: uri -> SVG bytes (the benchmark plots, drawn from the tables).
PICTURES: dict[str, bytes] = {}

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _first_number(cell: str) -> float | None:
    match = _NUMBER.search(cell.replace("**", ""))
    return float(match.group()) if match else None


def _tables(markdown: str) -> list[tuple[int, list[str], list[list[str]]]]:
    """(index of the line after the table, header cells, body rows) of every Markdown table."""
    lines = markdown.split("\n")
    found = []
    number = 0
    while number < len(lines) - 1:
        if lines[number].startswith("|") and re.match(r"^\|[ :|-]+\|$", lines[number + 1].strip()):
            header = [cell.strip() for cell in lines[number].strip().strip("|").split("|")]
            end = number + 2
            rows = []
            while end < len(lines) and lines[end].startswith("|"):
                rows.append([cell.strip() for cell in lines[end].strip().strip("|").split("|")])
                end += 1
            found.append((end, header, rows))
            number = end
        else:
            number += 1
    return found


def _plot(header: list[str], rows: list[list[str]]) -> bytes | None:
    """An SVG of a table: ratios as bars (a "served / reference" column), or every numeric column
    against a first column of concurrency or users. None for tables of neither kind."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio = next((i for i, name in enumerate(header) if name == "served / reference"), None)
    figure = None
    if ratio is not None:
        points = [(row[0], _first_number(row[ratio])) for row in rows if len(row) > ratio]
        points = [(re.sub(r"[`*]", "", label)[:48], value) for label, value in points if value is not None]
        if len(points) > 1:
            figure, axes = plt.subplots(figsize=(7, 0.45 * len(points) + 1))
            axes.barh(
                [label for label, _ in points][::-1], [value for _, value in points][::-1], color="#3f51b5"
            )
            axes.axvline(1.0, color="black", linewidth=0.8)
            axes.set_xlabel("served / reference, p50 (below 1: faster than the reference)")
    elif header[0] in ("concurrency", "users"):
        xs = [_first_number(row[0]) for row in rows]
        columns = [
            (name, [_first_number(row[i]) if i < len(row) else None for row in rows])
            for i, name in enumerate(header[1:], 1)
            if "before" not in name and all(_first_number(row[i]) is not None for row in rows if i < len(row))
        ]
        if columns and len(xs) > 1 and None not in xs:
            figure, axes = plt.subplots(len(columns), 1, figsize=(7, 1.8 * len(columns)), sharex=True)
            for ax, (name, ys) in zip(figure.axes, columns, strict=True):
                ax.plot(xs, ys, marker="o", color="#3f51b5")
                ax.set_ylabel(name)
                ax.grid(alpha=0.3)
            figure.axes[-1].set_xlabel(header[0])
    if figure is None:
        return None
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


@_page("benchmarks.md")
def benchmarks_page() -> str:
    text = _include("BENCHMARKS.md")
    lines = text.split("\n")
    for end, header, rows in reversed(_tables(text)):
        svg = _plot(header, rows)
        if svg is not None:
            uri = f"images/benchmarks-{len(PICTURES)}.svg"
            PICTURES[uri] = svg
            lines[end:end] = ["", f"![The table above, plotted at build time]({uri})", ""]
    return "\n".join(lines)


@_page("operating/deploy.md")
def deploy_page() -> str:
    return _include("deploy/README.md")


# --------------------------------------------------------------------------- MkDocs events


def on_files(files: Files, config: MkDocsConfig) -> Files:
    PICTURES.clear()
    for uri, write in PAGES.items():
        files.append(File.generated(config, uri, content=write()))
    for uri, svg in PICTURES.items():
        files.append(File.generated(config, uri, content=svg))
    return files


_MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise PluginError(
                f"{page.file.src_uri}: unknown generated part {name!r} (known: {sorted(PARTS)})"
            )
        return PARTS[name]()

    return _MARKER.sub(expand, markdown)
