"""Every kind of report page in a real browser (study/sweep, study failures and rebalance
here; demo and simulate in test_report_runs.py): every figure loads, nothing is wider than the
window and no table scrolls in its box; and the rule that cuts a wide table, by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from browser import page_metrics
from test_study_estimates import _study

from experiments.cli import main
from experiments.report_tables import column_groups, column_px, table_html
from simulator.cluster.builders import build_leaf_spine
from simulator.cluster.io import save_cluster
from tests.test_simulator_cli import inputs  # noqa: F401 - the fixture


def test_a_wide_table_is_cut_into_tables_that_fit():
    # a number column "X0" of "1.5": max(58.5 px header minimum, 3 chars x 7.5) + 17 = 75.5
    assert column_px("X0", ["1.5"], text=False) == 75.5
    # a text column of "round-robin": 11 chars x 7.5 + 17 = 99.5
    assert column_px("Strategy", ["round-robin"], text=True) == 99.5
    df = pd.DataFrame({"strategy": ["round-robin"], **{f"x{i}": [1.5] for i in range(20)}})
    # 99.5 + 20 x 75.5 = 1,609.5 px > 1,100: each table repeats the strategy column, and
    # 99.5 + 13 x 75.5 = 1,081 fits where 14 columns (1,156.5) do not: 13 + 7 columns
    groups = column_groups(df)
    assert groups == [[0, *range(1, 14)], [0, *range(14, 21)]]
    assert table_html(df).count("<table>") == 2 and table_html(df).count("round-robin") == 2
    assert column_groups(df.iloc[:, :13]) == [list(range(13))]  # 99.5 + 12 x 75.5 fits


def _sweep(tmp: Path, _inputs: dict) -> Path:
    out = tmp / "sweep"
    path = _study(tmp, 256, '["round-robin", "greedy"]')
    assert main(["sweep", str(path), "--serial", "-q", "--out", str(out)]) == 0
    return out


def _failures(tmp: Path, _inputs: dict) -> Path:
    src, out = tmp / "c.json", tmp / "failures"
    save_cluster(build_leaf_spine(4, 2, 2), src)
    assert main(["study", "failures", "--topology", str(src), "--tokens", "64", "--out",
                 str(out), "--strategy", "round-robin", "--strategy", "greedy", "-q"]) == 0
    return out


def _rebalance(tmp: Path, _inputs: dict) -> Path:
    trace, out = tmp / "steps.parquet", tmp / "rebalance"
    assert main(["trace", "synth", "--model", "deepseek-moe-16b", "--tokens", "256",
                 "--step-tokens", "64", "-q", "--out", str(trace)]) == 0
    assert main(["rebalance", "--trace", str(trace), "--fat-tree", "4", "4", "--interval", "1",
                 "--window", "1", "-q", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("make", [_sweep, _failures, _rebalance], ids=lambda f: f.__name__)
def test_every_report_page_fits_the_window(make, inputs, tmp_path):  # noqa: F811
    m = page_metrics(make(tmp_path, inputs) / "report.html")
    assert m["images"] >= 1 and m["broken_images"] == [], m
    assert m["page_width"] <= m["viewport"] and m["images_past_edge"] == [], m
    assert m["tables"] >= 1 and m["tables_wider_than_box"] == 0, m
