"""Griffe extension: the docstrings' Sphinx roles (``:class:`~sam_triton.SamClient```) as
Markdown code, which mkdocstrings would otherwise print verbatim.

``~`` keeps the last dotted part, as Sphinx shows it; a role without ``~`` keeps its whole
target.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def as_markdown(docstring: str) -> str:
    return _ROLE.sub(_code, docstring)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = as_markdown(obj.docstring.value)
