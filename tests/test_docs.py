"""The documentation site: it builds strictly, its generated references cover the code, and
every code sample of the guides and the README parses, and runs against a real server.

The strict build fails on a broken link or anchor, a missing picture, an unknown reference and
a docstring that disagrees with its signature. The Python samples run as a user would paste
them, against the suite's tiny-test tritonserver (``localhost:8001`` in a sample is that
server) in a folder holding the files they open; a sample that cannot run on its own says so
with ``<!-- sample: parse-only, WHY -->`` on the line before it and is only parsed. Shell
samples pass ``bash -n``, and every ``sam-triton`` command line in them is parsed by the real
argument parser and every ``make serve VAR=`` names a variable of the Makefile.
"""

from __future__ import annotations

import ast
import html
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ServedTriton

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
# Included in the site as they are (docs/hooks/generated.py): their samples are checked as well.
INCLUDED = [ROOT / "BENCHMARKS.md", ROOT / "deploy" / "README.md"]
PARSE_ONLY = "<!-- sample: parse-only"
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[a-z]*)\s*$")


@dataclass(frozen=True)
class Sample:
    path: Path
    line: int
    lang: str
    code: str
    parse_only: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def samples_of(path: Path) -> list[Sample]:
    """The fenced code blocks of a Markdown file (list-indented ones included)."""
    lines = path.read_text().splitlines()
    found = []
    number = 0
    while number < len(lines):
        start = _FENCE.match(lines[number])
        if not start or not start.group("lang"):
            number += 1
            continue
        indent = len(start.group("indent"))
        end = number + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path.relative_to(ROOT)}:{number + 1}: a code block that never closes"
        code = "\n".join(line[indent:] for line in lines[number + 1 : end])
        before = lines[number - 1].strip() if number else ""
        found.append(Sample(path, number + 1, start.group("lang"), code, before.startswith(PARSE_ONLY)))
        number = end + 1
    return found


SAMPLES = [sample for path in GUIDES + INCLUDED for sample in samples_of(path)]
PYTHON = [sample for sample in SAMPLES if sample.lang == "python"]
SHELL = [sample for sample in SAMPLES if sample.lang in ("bash", "sh")]
RUNNABLE = [sample for sample in PYTHON if not sample.parse_only and sample.path not in INCLUDED]


def test_the_guides_have_samples_of_every_kind() -> None:
    # The collection itself must find them: a broken fence pattern would make the tests below vacuous.
    assert len(PYTHON) >= 10 and len(SHELL) >= 10
    assert len(RUNNABLE) >= 8


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_strict_build_covers_every_public_sdk_name(site: Path) -> None:
    import sam_triton

    page = (site / "reference" / "sdk.html").read_text()
    missing = [name for name in sam_triton.__all__ if f'id="sam_triton.{name}"' not in page]
    assert missing == []


def test_cli_reference_lists_every_command_and_option(site: Path) -> None:
    import argparse

    from sam_triton.cli import build_parser

    page = (site / "reference" / "cli.html").read_text()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) >= {"export", "verify", "serve", "segment", "automask", "bench"}
    for name, parser in subparsers.choices.items():
        assert f"sam-triton {name}" in page
        options = [
            option
            for action in parser._actions
            if not isinstance(action, argparse._HelpAction)  # every command has it; the page says so once
            for option in action.option_strings
        ]
        assert [option for option in options if f"<code>{option}</code>" not in page] == [], name


def test_contract_reference_lists_every_served_tensor(site: Path) -> None:
    from sam_triton_common import contract

    page = (site / "reference" / "contract.html").read_text()
    for family in contract.FAMILIES.values():
        for tensor in (*family.encoder_inputs, *family.encoder_outputs, *family.decoder_inputs):
            assert f"<code>{tensor}</code>" in page, (family.name, tensor)
    for model in (contract.ENCODER_MODEL, contract.SESSION_MODEL, contract.AUTOMASK_MODEL):
        assert f"<code>{model}</code>" in page


def test_error_page_explains_every_sdk_error(site: Path) -> None:
    import sam_triton

    page = (site / "sdk" / "errors.html").read_text()
    errors = [name for name in sam_triton.__all__ if name.endswith("Error")]
    assert len(errors) >= 10
    # Each in the generated table (linked to its reference entry) and in the advice below it.
    assert [name for name in errors if f'href="../reference/sdk.html#sam_triton.{name}"' not in page] == []
    advice = page.split('id="what-to-do-about-each"', 1)[1]
    unexplained = [name for name in errors if name != "SamTritonError" and name not in advice]
    assert unexplained == [], 'give each error advice in docs/sdk/errors.md, "What to do about each"'


def test_included_pages_follow_their_files(site: Path) -> None:
    # BENCHMARKS.md and deploy/README.md stay where they are; the site shows them as they are now.
    for source, page in (("BENCHMARKS.md", "benchmarks.html"), ("deploy/README.md", "operating/deploy.html")):
        headings = re.findall(r"^## (.+)$", (ROOT / source).read_text(), re.MULTILINE)
        html = (site / page).read_text()
        assert headings and all(_plain(h) in html for h in headings), source


def _plain(markdown: str) -> str:
    """The start of a heading as the site writes it: the text before its first code span."""
    return html.escape(markdown.split("`")[0].strip(), quote=False)


def test_an_unknown_generated_part_fails_the_build() -> None:
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import generated
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    from mkdocs.exceptions import PluginError

    page = type("Page", (), {"file": type("File", (), {"src_uri": "x.md"})()})()
    with pytest.raises(PluginError, match="no-such-part"):
        generated.on_page_markdown("a\n<!-- generated: no-such-part -->\n", page, None, None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("sample", PYTHON, ids=lambda s: s.name)
def test_python_sample_parses(sample: Sample) -> None:
    compile(sample.code, sample.name, "exec", flags=ast.PyCF_ONLY_AST)


@pytest.mark.parametrize("sample", SHELL, ids=lambda s: s.name)
def test_shell_sample_parses(sample: Sample) -> None:
    result = subprocess.run(["bash", "-n"], input=sample.code, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _command_lines(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("sample", SHELL, ids=lambda s: s.name)
def test_shell_sample_commands_exist(sample: Sample) -> None:
    """Every sam-triton line parses with the real parser (optional parts in [brackets] included);
    every make serve VAR= is a variable of the Makefile."""
    from sam_triton.cli import build_parser

    makefile = (ROOT / "Makefile").read_text()
    for line in _command_lines(sample.code):
        words = shlex.split(line, comments=True)
        if words and Path(words[0]).name == "sam-triton":
            argv = [word.strip("[]") for word in words[1:] if word.strip("[]")]
            try:
                build_parser().parse_args(argv)
            except SystemExit as exit_:
                pytest.fail(f"{sample.name}: `{line}` does not parse (exit {exit_.code})")
        elif words[:2] == ["make", "serve"]:
            for word in words[2:]:
                variable = word.split("=", 1)[0]
                assert re.search(rf"^{variable} \?=", makefile, re.MULTILINE), f"{sample.name}: {variable}"


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the samples open: photo.jpg (640x480), dataset/*.jpg."""
    folder = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(0)
    photo = np.full((480, 640, 3), 40, np.uint8)
    photo[120:360, 160:480] = (200, 120, 60)  # an object in the middle, where the samples click
    photo += rng.integers(0, 20, photo.shape, dtype=np.uint8)
    Image.fromarray(photo).save(folder / "photo.jpg")
    (folder / "dataset").mkdir()
    for index in range(2):
        Image.fromarray(np.roll(photo, 40 * index, axis=1)).save(folder / "dataset" / f"{index}.jpg")
    return folder


@pytest.mark.parametrize("sample", RUNNABLE, ids=lambda s: s.name)
def test_python_sample_runs_against_a_real_server(
    sample: Sample, triton_server: ServedTriton, sample_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "localhost:8001" in sample.code, "a runnable sample talks to the server; else mark it parse-only"
    code = sample.code.replace("localhost:8001", triton_server.grpc_url)
    monkeypatch.chdir(sample_folder)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code, sample.name, "exec"), namespace)  # noqa: S102 - the sample is the test


def test_readme_links_lead_somewhere() -> None:
    """The README is the door: each of its links opens a file of the repository (GitHub shows
    docs/ pages as they are; `make docs` builds the same pages as a site)."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links into the documentation"
    broken = [target for target in targets if "://" not in target and not (ROOT / target).exists()]
    assert broken == []


def test_citations_in_the_code_lead_somewhere() -> None:
    """Comments, docstrings and messages that send a reader to the docs name a page that exists
    (docs/....md) or a section the README still has."""
    readme = (ROOT / "README.md").read_text()
    sections = set(re.findall(r"^#+ (.+)$", readme, re.MULTILINE)) | set(
        re.findall(r"^\*\*(.+?)\.\*\*", readme, re.MULTILINE)
    )
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    suffixes = {".py", ".toml", ".json", ".yaml", ".yml", ".pbtxt", ".sh", ""}
    broken = []
    for name in tracked.split():
        path = ROOT / name
        if name.startswith("docs/") or name == "tests/test_docs.py" or path.suffix not in suffixes:
            continue
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for page in re.findall(r"\bdocs/[\w/.-]+?\.md\b", text):
            if not (ROOT / page).exists():
                broken.append(f"{name}: {page}")
        for cited in re.findall(r"README(?:\.md)?(?:'s)?,?(?: section)?\s+\"([^\"\n]+)\"", text):
            if not any(section.startswith(" ".join(cited.split())) for section in sections):
                broken.append(f'{name}: README "{cited}"')
    assert broken == []
