"""Tables for people: readable headers, human units (GB, ms, %), no raw byte counts or NaN.

One rule per column-name pattern turns a result frame into the table a report shows; the
Parquet files keep the raw numbers in SI units.  A column that no rule knows is shown with its
name's underscores as spaces and numbers to three significant digits.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Unit:
    """How a column is shown: header suffix, scale from the stored SI value, format."""

    suffix: str
    scale: float
    fmt: str  # format spec applied after scaling


_GB = Unit("GB", 1e-9, ",.2f")
_MS = Unit("ms", 1e3, ",.2f")
_PCT_OF_ONE = Unit("%", 100.0, ".1f")
_PCT = Unit("%", 1.0, "+.1f")
_S = Unit("s", 1.0, ",.2f")
_PLAIN = Unit("", 1.0, ",.1f")
_COUNT = Unit("", 1.0, ",.0f")

# (name test, unit); the first that matches wins
_RULES: tuple[tuple[Callable[[str], bool], Unit], ...] = (
    (lambda c: c.endswith("_pct"), _PCT),
    (lambda c: c.endswith("_ms"), Unit("ms", 1.0, ",.2f")),
    (lambda c: "utilisation" in c or c.endswith("_fraction"), _PCT_OF_ONE),
    (lambda c: c.endswith("_bytes_per_s"), Unit("GB/s", 1e-9, ",.2f")),  # a rate, not bytes
    (lambda c: "bytes" in c and not c.endswith("_per_element"), _GB),
    (lambda c: c.endswith("solve_time_s") or c.endswith("runtime_s"), _S),
    (lambda c: c.endswith("_s"), _MS),
    (lambda c: c in ("tokens", "seeds", "cells", "routes", "experts", "gpus", "servers"), _COUNT),
    (lambda c: c.endswith("_per_token") or c == "gap" or c.endswith("_bound"), _PLAIN),
)

# headers that read better than the column name
_HEADERS = {
    "strategy": "Strategy",
    "setup": "Setup",
    "status": "Status",
    "hops_per_token": "Hops per token",
    "expected_hops_per_token": "Expected hops per token",
    "network_bytes": "Bytes leaving servers",
    "network_link_bytes": "Bytes on network links",
    "max_link_utilisation": "Busiest link utilisation",
    "latency_p50_ms": "p50 MoE latency",
    "latency_p99_ms": "p99 MoE latency",
    "latency_p50_s": "p50 MoE latency",
    "latency_p99_s": "p99 MoE latency",
    "makespan_s": "Makespan",
    "makespan_ms": "Makespan",
    "solve_time_s": "Solve time",
    "gap": "MIP gap",
    "dual_bound": "Dual bound",
    "hops_per_token_reduction_pct": "Hop reduction vs. baseline",
    "network_link_bytes_reduction_pct": "Link-byte reduction vs. baseline",
    "network_bytes_reduction_pct": "Reduction of bytes leaving servers",
    "latency_p99_ms_reduction_pct": "p99 latency reduction vs. baseline",
    "bytes_intra_server": "Bytes inside servers",
    "max_gpu_compute_utilisation": "Busiest GPU compute utilisation",
    "microbatches": "Micro-batches",
    "dispatch_lower_bound_s": "Dispatch lower bound",
    "combine_lower_bound_s": "Combine lower bound",
}


# Byte counts are shown in the largest of these units that the largest value reaches, so a
# small run reads 12.34 MB, not 0.00 GB (one unit per column or axis).
_BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("KB", 1e3))


def byte_unit(largest: float) -> tuple[str, float]:
    """(suffix, bytes per unit) for byte counts whose largest absolute value is ``largest``.

    >>> byte_unit(2.5e12), byte_unit(3.4e6), byte_unit(512.0), byte_unit(float("nan"))
    (('GB', 1000000000.0), ('MB', 1000000.0), ('B', 1.0), ('GB', 1000000000.0))
    """
    if math.isnan(largest):
        return _BYTE_UNITS[0]
    return next(((u, b) for u, b in _BYTE_UNITS if abs(largest) >= b), ("B", 1.0))


def unit_of(column: str, values: Sequence[object] = ()) -> Unit | None:
    """The display rule of a numeric column (None: shown as it is); byte columns in the unit
    their largest value reaches (:func:`byte_unit`)."""
    unit = next((unit for test, unit in _RULES if test(column)), None)
    if unit is _GB and values:
        numbers = [abs(float(v)) for v in values if isinstance(v, int | float)
                   and not isinstance(v, bool) and math.isfinite(float(v))]
        suffix, size = byte_unit(max(numbers, default=math.nan))
        unit = Unit(suffix, 1.0 / size, ",.2f" if size > 1 else ",.0f")
    return unit


def header(column: str, values: Sequence[object] = ()) -> str:
    """'Bytes on network links (GB)' for ``network_link_bytes``."""
    text = _HEADERS.get(column)
    if text is None:
        text = column.replace("_", " ")
        text = text[:1].upper() + text[1:]
        for tail in (" bytes per s", " pct", " ms", " s"):
            if text.endswith(tail) and unit_of(column) is not None:
                text = text[: -len(tail)]
    unit = unit_of(column, values)
    return f"{text} ({unit.suffix})" if unit is not None and unit.suffix else text


def axis_label(name: str, value: object) -> str:
    """'nic bandwidth 50 GB/s' for ``("nic_bandwidth_bytes_per_s", 5e10)``: a varied axis in
    a setup's label (tables, tick labels), in the tables' units and words, not field names."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    unit = unit_of(name, [value]) if number else None  # a byte value in its own unit
    text = name
    if unit is not None and unit.suffix:
        for tail in ("_bytes_per_s", "_bytes", "_pct", "_ms", "_s"):
            if text.endswith(tail):
                text = text[: -len(tail)]
                break
    text = text.replace("_", " ")
    if not number:
        return f"{text} {value}"
    if unit is None or not unit.suffix:
        return f"{text} {value:g}"
    return f"{text} {float(value) * unit.scale:.3g} {unit.suffix}"  # type: ignore[arg-type]


def cell(column: str, value: object, values: Sequence[object] = ()) -> str:
    """One value as the table shows it: scaled, rounded, '–' for missing (``values``: its
    column, which sets the unit of byte counts)."""
    return _shown(value, unit_of(column, values))


def _shown(value: object, unit: Unit | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit is None:
        return f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"
    return format(float(value) * unit.scale, unit.fmt)


def human_table(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as strings with readable headers (what ``format_table`` renders)."""
    shown = {}
    for c in df.columns:
        values = df[c].tolist()
        unit = unit_of(c, values)
        shown[header(c, values)] = [_shown(x, unit) for x in values]
    out = pd.DataFrame(shown)
    out.index = df.index
    return out


# No table is wider than the page's text column: a wider one is cut into several, each
# repeating the leading text columns (which say what a row is).  Widths are estimated from
# characters at the page's 13 px table font; text cells wrap at TEXT_CELL_CHARS.
PAGE_TEXT_PX = 1100  # the body's max-width
CHAR_PX = 7.5
CELL_PAD_PX = 17  # 8 px padding either side and a border
HEADER_MIN_PX = 58.5  # th min-width 4.5em at 13 px
TEXT_CELL_CHARS = 28


def _is_text(df: pd.DataFrame, column: object) -> bool:
    return not pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column])


def column_px(head: str, values: list[str], text: bool) -> float:
    """Estimated width of a column: its longest cell (text wraps at TEXT_CELL_CHARS) or the
    longest word of its header (headers wrap between words), at least the header minimum."""
    longest = max((len(v) for v in values), default=0)
    if text:
        longest = min(longest, TEXT_CELL_CHARS)
    word = max((len(w) for w in head.split()), default=0)
    return max(HEADER_MIN_PX, CHAR_PX * max(longest, word)) + CELL_PAD_PX


def column_groups(df: pd.DataFrame, budget_px: float = PAGE_TEXT_PX) -> list[list[int]]:
    """Column positions of the tables ``df`` is shown as: all of them when they fit
    ``budget_px``, else groups that fit, each led by the frame's leading text columns."""
    shown = human_table(df)
    widths = [column_px(str(h), shown.iloc[:, i].tolist(), _is_text(df, df.columns[i]))
              for i, h in enumerate(shown.columns)]
    if sum(widths) <= budget_px:
        return [list(range(len(widths)))]
    keys: list[int] = []
    for i, c in enumerate(df.columns):
        if not _is_text(df, c) or sum(widths[j] for j in [*keys, i]) > budget_px / 2:
            break
        keys.append(i)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in range(len(keys), len(widths)):
        if current and sum(widths[j] for j in [*keys, *current, i]) > budget_px:
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    return [[*keys, *g] for g in groups]


def table_html(df: pd.DataFrame) -> str:
    """An HTML table in human units; a table wider than the page is cut into several
    (:func:`column_groups`); text cells wrap."""
    shown = human_table(df)
    text = [_is_text(df, c) for c in df.columns]
    out = []
    for group in column_groups(df):
        head = "".join(f"<th>{html.escape(str(shown.columns[i]))}</th>" for i in group)
        rows = "".join(
            "<tr>" + "".join(f"<td class='text'>{html.escape(row[i])}</td>" if text[i]
                             else f"<td>{html.escape(row[i])}</td>" for i in group) + "</tr>"
            for row in shown.itertuples(index=False)
        )
        out.append(f"<div class='table'><table><tr>{head}</tr>{rows}</table></div>")
    return "".join(out)
