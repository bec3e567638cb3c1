"""The package boundaries of docs/architecture.md, read from the code with ``ast``.

Every module of every package is parsed (imports inside functions count too: a lazy import
is still a dependency), so a new import across a boundary fails here, not in a user's
plain ``pip install sam-triton``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from sam_triton_common import contract

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "sam_triton": ROOT / "client" / "sam_triton",
    "sam_triton_common": ROOT / "common" / "sam_triton_common",
    "sam_triton_bench": ROOT / "bench" / "sam_triton_bench",
    "sam_triton_export": ROOT / "export" / "sam_triton_export",
    "sam_triton_server": ROOT / "server" / "sam_triton_server",
}
# Which of the other packages each one may import (module-name prefixes).
ALLOWED: dict[str, tuple[str, ...]] = {
    "sam_triton_common": (),
    "sam_triton": ("sam_triton_common",),
    "sam_triton_server": ("sam_triton_common",),
    # Runtime helpers of the server (ort, prompt_decoder, automask limits), never its Triton models.
    "sam_triton_export": ("sam_triton_common", "sam_triton_server"),
    # The harness drives the SDK; its in-process baselines load export and server code lazily.
    "sam_triton_bench": ("sam_triton", "sam_triton_common", "sam_triton_export", "sam_triton_server"),
}
FORBIDDEN: dict[str, tuple[str, ...]] = {"sam_triton_export": ("sam_triton_server.backend.models",)}


def _modules(package: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGES[package].rglob("*.py")):
        if "proto" not in path.relative_to(PACKAGES[package]).parts:  # generated
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def _project_imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_architecture_allows(package: str) -> None:
    allowed = (package, *ALLOWED[package])
    wrong = sorted(
        f"{path}: {name}"
        for path, tree in _modules(package)
        for name in set(_project_imports(tree))
        if not any(_within(name, a) for a in allowed)
        or any(_within(name, f) for f in FORBIDDEN.get(package, ()))
    )
    assert not wrong, f"{package} reaches across the package boundaries:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("half", "other"),
    [("launcher", "sam_triton_server.backend"), ("backend", "sam_triton_server.launcher")],
)
def test_the_server_halves_do_not_import_each_other(half: str, other: str) -> None:
    """What runs Triton (launcher/) and what Triton runs (backend/) meet only through the
    model repository: a backend import in the launcher would load model code into `serve`, a
    launcher import in the backend would load process management into every Triton stub."""
    wrong = sorted(
        f"{path}: {name}"
        for path, tree in _modules("sam_triton_server")
        if Path(path).parts[2] == half
        for name in set(_project_imports(tree))
        if _within(name, other)
    )
    assert not wrong, f"server/{half} imports the other half:\n" + "\n".join(wrong)


def test_the_contract_depends_on_the_standard_library_only() -> None:
    tree = ast.parse((PACKAGES["sam_triton_common"] / "contract.py").read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "json", "pathlib", "typing"}


# Facts of the contract that are unmistakable as string literals (short generic ones such as
# "image" or the ensemble's "sam" would match unrelated strings).
SPELLED_ONCE = {
    contract.ENCODER_MODEL,
    contract.DECODER_MODEL,
    contract.SESSION_MODEL,
    contract.AUTOMASK_MODEL,
    contract.IMAGE_EMBEDDINGS,
    *contract.DECODER_OUTPUTS,
    contract.SESSION_HEADER,
    contract.CONTENT_ID_PREFIX,
    contract.MODEL_FILE,
    contract.IMAGE_FEATURES_FILE,
    contract.PROMPT_DECODER_FILE,
    contract.EXPORT_INFO_FILE,
    *contract.HIGH_RES_FEATS,
    contract.RESIZE_LONGEST_SIDE,
    contract.RESIZE_SQUARE,
}


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            ids.add(id(body[0].value))
    return ids


def test_contract_facts_are_spelled_only_in_the_contract() -> None:
    spelled = []
    for package in PACKAGES:
        for path, tree in _modules(package):
            if path.endswith("contract.py"):
                continue
            docstrings = _docstrings(tree)
            spelled += [
                f"{path}:{node.lineno}: {node.value!r}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and node.value in SPELLED_ONCE
                and id(node) not in docstrings
            ]
    assert not spelled, "import these from sam_triton_common.contract:\n" + "\n".join(spelled)
