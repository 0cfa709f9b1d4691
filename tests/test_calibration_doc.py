"""docs/background/timing-calibration.md against simulator.timing and simulator.calibration:
the parameter table is the module's, every published value is DeepEP's, and the cheap rows
of the simulated tables are what a fresh replay gives (the rest come from the same command,
``benchmarks/bench_calibration.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator import calibration as cal

DOC = Path(__file__).resolve().parents[1] / "docs" / "background" / "timing-calibration.md"


def _lines() -> list[str]:
    return DOC.read_text(encoding="utf-8").splitlines()


def _rows(prefix: str) -> dict[int, str]:
    """Table rows of the section whose heading starts with ``prefix``, by EP."""
    out: dict[int, str] = {}
    inside = False
    for line in _lines():
        if line.startswith("## "):
            inside = line.startswith(prefix)
        elif inside and re.match(r"\| \d+ \|", line):
            out[int(line.split("|")[1])] = line
    return out


def test_parameter_table_is_the_modules():
    text = "\n".join(_lines())
    assert "\n".join(cal.parameter_table()) in text


def test_every_published_row_is_deepeps():
    ll, normal = _rows("## Low-latency"), _rows("## Normal")
    assert sorted(ll) == sorted(cal.LL_TABLE) and sorted(normal) == sorted(cal.NORMAL_TABLE)
    for ep, (d_us, _, c_us, _) in cal.LL_TABLE.items():
        cells = [c.strip() for c in ll[ep].split("|")[1:-1]]
        assert (cells[1], cells[4]) == (f"{d_us} us", f"{c_us} us")
    for ep, (kind, d_gbs, c_gbs) in cal.NORMAL_TABLE.items():
        cells = [c.strip() for c in normal[ep].split("|")[1:-1]]
        assert (cells[1], cells[2], cells[5]) == (kind, f"{d_gbs} GB/s", f"{c_gbs} GB/s")


@pytest.mark.parametrize("ep", [8, 16, 32])
def test_low_latency_rows_are_a_fresh_replay(ep):
    (row,) = cal.low_latency(0, [ep])
    assert cal.markdown([row])[2] == _rows("## Low-latency")[ep]


def test_normal_intranode_row_is_a_fresh_replay():
    (row,) = cal.normal(0, [8])
    assert cal.markdown([row])[2] == _rows("## Normal")[8]
