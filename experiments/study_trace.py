"""The ``[trace]`` table of a study file as one dataclass: its keys, defaults and ranges.

The numeric keys carry their valid range in their field (:func:`traces.infra.options.option`);
the flags that set the same knob take the range from here too (``study paper --tokens``,
``study failures --tokens``, ``trace synth --seq-len`` and ``--zipf``), so a value a flag
refuses is refused as a study key (or a sweep axis value) as well, in the same words
(``tests/test_range_agreement.py`` checks every pair).  Light: no numerical libraries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from traces.infra.options import check_field_value, option
from traces.origin_models import origins_field

TOKENS_RANGE = (1, 2**30)


@dataclass(frozen=True)
class TraceSection:
    """One cell's trace: where its tokens come from and how many are fitted and replayed."""

    source: str = field(default="synthetic", metadata={
        "help": "'synthetic' (the generator) or a native trace file to replay."})
    fit_source: str = field(default="", metadata={
        "help": "Fit on this trace or load statistics instead of the replayed trace's head."})
    fit_tokens: int = option(2048, "Tokens fitted on.", "tokens", *TOKENS_RANGE)
    replay_tokens: int = option(2048, "Tokens replayed.", "tokens", *TOKENS_RANGE)
    # one token per sequence: origins (sequence mod GPUs) spread evenly
    seq_len: int = option(1, "Tokens per sequence.", "tokens", 1, 2**31 - 1)
    zipf_exponent: float = option(0.9, "Zipf exponent of popularity.", "", 0, 100)
    origins: str = origins_field()
    tenants: int = option(0, "Tenants of the synthetic generator, each on its own servers.",
                          "tenants", 0, 2**20)
    label: str = field(default="", metadata={"help": "The trace's name in the results."})


TRACE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TraceSection)}
NUMERIC_KEYS = tuple(f.name for f in dataclasses.fields(TraceSection) if "range" in f.metadata)


def check_trace_numbers(trace: dict[str, Any], where: str) -> None:
    """Each numeric key of ``trace`` (a full ``[trace]`` table) against its field's type and
    range; the message names ``<where>: trace.<key>``."""
    for key in NUMERIC_KEYS:
        check_field_value(TraceSection, key, trace[key], f"{where}: trace.{key}")
