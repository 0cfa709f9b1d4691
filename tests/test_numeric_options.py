"""Every derived numeric flag at 0, negative, NaN, infinite, huge and just outside its range:
exit 2 with one line naming the flag, no traceback, nothing written, no input touched (values
inside the range are the other tests' business).  In-process, so it stays cheap."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from badinput import prepare_cli_dir
from test_input_protection import _run, _snapshot
from test_option_registry import LEAVES

from traces.infra.options import Range

BASE = {
    "simulate": ["simulate", "--mode", "analytic", "--trace", "{d}/trace.parquet", "--topology",
                 "{d}/cluster.json", "--layout", "{d}/layout.csv", "--out", "{d}/run"],
    "place": ["place", "--topology", "{d}/cluster.json", "--fit", "{d}/trace.parquet",
              "--out", "{d}/l.parquet"],
}


def _candidates(rng: Range, integer: bool) -> list[str]:
    values = [0.0, -1.0, math.nan, math.inf, -math.inf, 1e300]
    step = 1 if integer else 1e-9
    if rng.low is not None:
        values.append(rng.low if rng.low_open else rng.low - max(step, abs(rng.low) * 1e-9))
    if rng.high is not None:
        values.append(rng.high if rng.high_open else rng.high + max(step, abs(rng.high) * 1e-9))
    out = []
    for v in values:
        if not math.isnan(v) and rng.contains(v):
            continue
        out.append(str(int(v)) if integer and math.isfinite(v) else repr(v))
    return out


CASES = []
for command in BASE:
    for action in LEAVES[command]._actions:
        field = getattr(action, "option_field", None)
        if field is None or action.type is None:
            continue
        cls, name = field
        f = next(x for x in dataclasses.fields(cls) if x.name == name)
        integer = f.type.startswith("int")
        for text in _candidates(f.metadata["range"], integer):
            CASES.append(pytest.param(command, action.option_strings[0], text,
                                      id=f"{command} {action.option_strings[0]}={text}"))


@pytest.mark.parametrize(("command", "flag", "value"), CASES)
def test_out_of_range_values_are_refused_before_any_work(command, flag, value, tmp_path: Path):
    prepare_cli_dir(tmp_path)
    before = _snapshot(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in BASE[command]] + [flag, value]
    code, text = _run(argv)
    assert code == 2, (argv, text)
    assert text.count("\n") == 1 and flag in text and "Traceback" not in text, text
    assert _snapshot(tmp_path) == before
