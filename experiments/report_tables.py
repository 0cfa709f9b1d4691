"""Tables for people: readable headers, human units (GB, ms, %), no raw byte counts or NaN.

One rule per column-name pattern turns a result frame into the table a report shows; the
Parquet files keep the raw numbers in SI units.  A column that no rule knows is shown with its
name's underscores as spaces and numbers to three significant digits.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
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


def unit_of(column: str) -> Unit | None:
    """The display rule of a numeric column (None: shown as it is)."""
    return next((unit for test, unit in _RULES if test(column)), None)


def header(column: str) -> str:
    """'Bytes on network links (GB)' for ``network_link_bytes``."""
    text = _HEADERS.get(column)
    if text is None:
        text = column.replace("_", " ")
        text = text[:1].upper() + text[1:]
        for tail in (" pct", " ms", " s"):
            if text.endswith(tail) and unit_of(column) is not None:
                text = text[: -len(tail)]
    unit = unit_of(column)
    return f"{text} ({unit.suffix})" if unit is not None and unit.suffix else text


def cell(column: str, value: object) -> str:
    """One value as the table shows it: scaled, rounded, '–' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    unit = unit_of(column)
    if unit is None:
        return f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"
    return format(float(value) * unit.scale, unit.fmt)


def human_table(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as strings with readable headers (what ``format_table`` renders)."""
    out = pd.DataFrame({header(c): [cell(c, v) for v in df[c].tolist()] for c in df.columns})
    out.index = df.index
    return out


def table_html(df: pd.DataFrame) -> str:
    """An HTML table in human units; wide tables scroll inside their box, never the page."""
    shown = human_table(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return f"<div class='table'><table><tr>{head}</tr>{rows}</table></div>"
