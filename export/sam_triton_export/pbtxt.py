"""A small writer for Triton's protobuf text format, so configs are built as data (one place
per model, no copy-pasted template strings) and still come out readable, with comments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Enum:
    """An enum value (written bare: ``TYPE_FP32``, ``KIND_CPU``)."""

    name: str


@dataclass(frozen=True)
class Comment:
    text: str


# Union, not |: the aliases name classes by string, which `|` cannot combine at run time.
Scalar = Union[str, int, float, bool, Enum]  # noqa: UP007
Value = Union[Scalar, "Message", Sequence[Scalar], Sequence["Message"]]  # noqa: UP007
Field = Union[tuple[str, Value], Comment]  # noqa: UP007


@dataclass(frozen=True)
class Message:
    fields: tuple[Field, ...]

    @classmethod
    def of(cls, *fields: Field) -> Message:
        return cls(tuple(fields))


def _scalar(value: Scalar) -> str:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def render(message: Message, indent: int = 0) -> str:
    pad = "  " * indent
    lines: list[str] = []
    for item in message.fields:
        if isinstance(item, Comment):
            lines.extend(f"{pad}# {line}".rstrip() for line in item.text.splitlines())
            continue
        name, value = item
        if isinstance(value, Message):
            lines.append(f"{pad}{name} {{\n{render(value, indent + 1)}{pad}}}")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            messages = [v for v in value if isinstance(v, Message)]
            if messages:
                body = ",\n".join(f"{pad}  {{\n{render(m, indent + 2)}{pad}  }}" for m in messages)
                lines.append(f"{pad}{name} [\n{body}\n{pad}]")
            else:
                scalars = ", ".join(_scalar(v) for v in value if not isinstance(v, Message))
                lines.append(f"{pad}{name}: [ {scalars} ]")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)
