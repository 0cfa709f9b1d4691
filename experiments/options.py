"""Command-line flags derived from the option fields of the configuration dataclasses.

``add_option(parser, SimConfig, "chunk_bytes", "--chunk-bytes")`` adds a flag whose type,
default, unit, valid range and help come from the field (:func:`traces.infra.options.option`);
a value outside the range is refused by argparse before any work starts, naming the flag:
``moe-netsim: error: argument --chunk-bytes: must be >= 1 bytes, got 0``.  The flag remembers
its field (``action.option_field``) so a test can prove flag defaults equal field defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from traces.infra.options import Range, range_problem

# Seeds of every command: what HiGHS's random_seed takes (placement.options.SolverOptions.seed
# declares the same range; tests/test_numeric_options.py checks they agree).
SEED_RANGE = Range(0, 2**31 - 1)


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _base_type(cls: type, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def number_parser(kind: type, rng: Range | None, unit: str = "") -> Callable[[str], Any]:
    """argparse ``type=`` that parses an int or float and checks it against ``rng``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if kind is float and math.isnan(value):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        problem = None if rng is None else range_problem(value, rng, unit)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_option(
    parser: argparse._ActionsContainer, cls: type, name: str, flag: str, *aliases: str,
    help: str | None = None, default: Any = dataclasses.MISSING, more: str = "",
) -> argparse.Action:
    """Add ``flag`` for the option field ``cls.name`` (type, default, range, unit, help;
    ``more`` is appended to the field's help, ``help`` replaces it)."""
    f = _field(cls, name)
    kind = _base_type(cls, name)
    text = (help or f.metadata.get("help", "")) + more
    value = f.default if default is dataclasses.MISSING else default
    if kind is bool:
        action = parser.add_argument(flag, *aliases, action="store_true", help=text)
    elif "parse" in f.metadata:  # checked by the command, which names the flag and its file
        action = parser.add_argument(flag, *aliases, default=value, help=text,
                                     metavar=f.metadata["metavar"])
    elif "choices" in f.metadata:
        action = parser.add_argument(flag, *aliases, choices=list(f.metadata["choices"]),
                                     default=value, help=text)
    elif kind not in (int, float):  # a name the command checks (e.g. a strategy)
        action = parser.add_argument(flag, *aliases, default=value, help=text)
    else:
        action = add_number(parser, flag, kind, value, text, f.metadata.get("unit", ""),
                            f.metadata.get("range"), *aliases)
    action.option_field = (cls, name)  # type: ignore[attr-defined]
    return action


def add_number(
    parser: argparse._ActionsContainer, flag: str, kind: type, default: Any, help: str,
    unit: str = "", rng: Range | None = None, *aliases: str, **kwargs: Any,
) -> argparse.Action:
    """A numeric flag whose ``--help`` shows its unit and range and whose value is checked
    (``kwargs``: argparse's ``required``, ``action="append"``, ``nargs``, ``metavar``)."""
    detail = ", ".join(x for x in (unit, rng.text() if rng else "") if x)
    text = f"{help} [{detail}]" if detail else help
    action = parser.add_argument(flag, *aliases, type=number_parser(kind, rng, unit),
                                 default=default, help=text, **kwargs)
    action.option_range = (kind, rng)  # type: ignore[attr-defined]
    return action
