"""Argument types of ``sam-triton bench``'s options: a number out of range is a usage error."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def _number(
    name: str, parse: Callable[[str], Number], ok: Callable[[Number], bool], rule: str
) -> Callable[[str], Number]:
    def convert(text: str) -> Number:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    convert.__name__ = name  # argparse names it in "invalid <name> value: 'x'"
    return convert


positive_float = _number("positive_float", float, lambda v: v > 0, "positive")
positive_int = _number("positive_int", int, lambda v: v >= 1, ">= 1")
non_negative_float = _number("non_negative_float", float, lambda v: v >= 0, ">= 0")
non_negative_int = _number("non_negative_int", int, lambda v: v >= 0, ">= 0")
fraction = _number("fraction", float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
