"""Typed values from parsed files (JSON, TOML, Parquet metadata): the one coercion layer.

A value is checked against a dataclass field's annotation (:func:`typed_value`: ``bool``,
``int``, ``float``, ``str``, ``None``, unions of them and ``tuple[X, ...]``; an integer is a
float where a float is asked for, a list a tuple), and a dict becomes a dataclass with unknown,
missing and mistyped keys refused (:func:`build_record`).  Every message is one line naming
the key as a path (``cluster.json: links[0].latency_s: expected a number, got '1us' (a
string)``).
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from traces.infra.errors import InputError

_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
          list: "a list", dict: "a table"}


def type_name(v: Any) -> str:
    """What a parsed value is, for a message (``'64' (a string)``)."""
    return _NAMES.get(type(v), type(v).__name__)


def key_text(k: Any) -> str:
    """A user's key for a one-line message: as written, or quoted when it holds odd characters."""
    return k if isinstance(k, str) and k.isprintable() else repr(k)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"  # numpy's bool too


def accepts(annotation: Any, v: Any) -> bool | None:
    """True/False when the annotation is a simple type; None when it cannot be judged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [accepts(a, v) for a in typing.get_args(annotation)]
        if any(x is True for x in verdicts):
            return True
        return None if any(x is None for x in verdicts) else False
    if annotation is type(None):
        return v is None
    if annotation is bool:
        return _is_bool(v)
    if annotation is int:
        return isinstance(v, numbers.Integral) and not _is_bool(v)
    if annotation is float:
        return isinstance(v, numbers.Real) and not _is_bool(v)
    if annotation is str:
        return isinstance(v, str)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(v, list | tuple):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1:
            inner = [accepts(args[0], x) for x in v]
            return False if any(x is False for x in inner) else True
        return True
    return None


def describe(annotation: Any) -> str:
    """What an annotation asks for, for a message (``an integer or None`` reads ``an integer``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(describe(a) for a in parts)
    if origin in (tuple, list) or annotation in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1 and args[0] in _NAMES:
            return f"a list of {_NAMES[args[0]].split(' ', 1)[1]}s"
        return "a list"
    return _NAMES.get(annotation, str(annotation))


def typed_value(annotation: Any, v: Any, where: str) -> Any:
    """``v`` as the annotation wants it (an int as a float, a list as a tuple), else an error
    naming ``where`` (the key's path)."""
    if accepts(annotation, v) is False:
        raise InputError(f"{where}: expected {describe(annotation)}, got {v!r} ({type_name(v)})")
    if annotation is float and not isinstance(v, float):
        try:
            return float(v)
        except OverflowError:
            raise InputError(f"{where}: {v} is too large") from None
    if annotation is int and not isinstance(v, int):
        return int(v)  # a numpy integer
    if isinstance(v, list) and (typing.get_origin(annotation) is tuple or annotation is tuple):
        return tuple(v)
    return v


def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> annotation of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def check_keys(values: Mapping[Any, Any], known: Iterable[str], where: str) -> None:
    """Refuse a key of ``values`` that is not ``known``, listing the known ones."""
    known = list(known)
    for key in values:
        if key not in known:
            raise InputError(f"{where}.{key_text(key)}: unknown key; known:"
                             f" {', '.join(known) or '(none)'}")


def typed_fields(values: Mapping[str, Any], hints: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every key of ``values`` known to ``hints`` and typed as its annotation asks."""
    check_keys(values, sorted(hints), where)
    return {k: typed_value(hints[k], v, f"{where}.{k}") for k, v in values.items()}


def build_record(cls: type, values: Any, where: str, missing_hint: str = "") -> Any:
    """The dataclass ``cls`` from the dict ``values``: unknown keys, missing required ones and
    mistyped values are one-line errors naming ``where`` and the key; so is the dataclass's own
    validation (its ``InputError`` or ``ValueError``)."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected an object, got {values!r} ({type_name(values)})")
    typed = typed_fields(values, field_hints(cls), where)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in typed:
            raise InputError(f"{where}: required key {f.name!r} is missing{missing_hint}")
    try:
        return cls(**typed)
    except (InputError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None
