"""One definition per option: default, unit, valid range and help, on the dataclass field.

A configuration dataclass (``SimConfig``, ``TrafficConfig``, ``SolverOptions``, ...) declares
each knob with :func:`option`; its ``__post_init__`` calls :func:`check_options`, so library
calls and study-file keys (which are the field names) are checked against the same range, and
the command line derives its flags, their defaults, ``--help`` text and argument checks from
the same fields (``experiments/options.py``).  A text option (:func:`text_option`) carries the
parser of its small language instead of a range (``--origins``, ``trace.origins``).  A test
proves CLI defaults, study keys and dataclass defaults agree (``tests/test_option_registry.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from traces.infra.errors import InputError


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (either end open or absent); NaN is never in range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value
    high_open: bool = False  # value < high

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def text(self) -> str:
        """``>= 1``, ``> 0``, ``>= 0 and < 1``, ``>= 1 and <= 2^40``."""
        lo = None if self.low is None else f"{'> ' if self.low_open else '>= '}{_num(self.low)}"
        hi = None if self.high is None else (
            f"{'< ' if self.high_open else '<= '}{_num(self.high)}")
        if lo and hi:
            return f"{lo} and {hi}"
        return lo or hi or "any finite number"


def _num(x: float) -> str:
    """1, 1e+06, 2^40: exact for small integers and powers of two, short otherwise."""
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    if float(x).is_integer() and x > 0 and int(x) & (int(x) - 1) == 0:
        return f"2^{int(x).bit_length() - 1}"
    if float(x).is_integer() and x > 0 and (int(x) + 1) & int(x) == 0:
        return f"2^{int(x).bit_length()}-1"
    return f"{x:g}"


def option(
    default: Any,
    help: str,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A dataclass field with its help, unit and valid range in the metadata."""
    return dataclasses.field(
        default=default,
        metadata={"help": help, "unit": unit, "range": Range(low, high, low_open, high_open)},
    )


def text_option(default: str, help: str, metavar: str, parse: Callable[[str, str], Any]) -> Any:
    """A dataclass field holding text in a small language (``--origins tenants:0-3/4-7``):
    ``parse(text, where)`` checks it (raising :class:`InputError`); ``""`` means the default
    behaviour and is not parsed."""
    return dataclasses.field(
        default=default, metadata={"help": help, "metavar": metavar, "parse": parse},
    )


def field_range(cls: type, name: str) -> Range | None:
    return next((f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name),
                None)


def range_problem(value: Any, rng: Range, unit: str = "") -> str | None:
    """Why ``value`` is not a valid value of an option with range ``rng``, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {value!r}"
    if rng.contains(value):
        return None
    units = f" {unit}" if unit else ""
    return f"must be {rng.text()}{units}, got {value!r}"


def check_field_value(cls: type, name: str, value: Any, where: str) -> None:
    """``value`` for the :func:`option` field ``cls.name`` given outside the dataclass (a study
    key): InputError naming ``where`` unless it has the field's kind and lies in its range."""
    import typing

    from traces.infra.records import type_name

    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls)[name]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if kinds[0] is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{where}: expected an integer, got {value!r} ({type_name(value)})")
    problem = range_problem(value, f.metadata["range"], f.metadata.get("unit", ""))
    if problem:
        raise InputError(f"{where}: {problem}")


def check_options(obj: Any, where: str) -> None:
    """Check every :func:`option` field of a dataclass instance; ``None`` means "derived"."""
    for f in dataclasses.fields(obj):
        rng = f.metadata.get("range")
        value = getattr(obj, f.name)
        if "parse" in f.metadata and value:
            f.metadata["parse"](value, f"{where}: {f.name}")
        if rng is None or value is None:
            continue
        problem = range_problem(value, rng, f.metadata.get("unit", ""))
        if problem:
            raise InputError(f"{where}: {f.name} {problem}")
