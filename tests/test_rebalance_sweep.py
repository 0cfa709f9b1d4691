"""Rebalancing policies and their knobs as sweep axes (keys: RebalanceConfig's fields)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.cli import main
from experiments.studies import load_study_file
from traces.infra.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rebalance import _drift  # noqa: E402

STUDY = """
seed = 0
[study]
name = "policies"
baseline = "ilp-origin"
[topology]
family = "fat-tree"
params = {{ k = 4, num_servers = 4 }}
[strategy]
name = "ilp-origin"
[trace]
source = "drift.parquet"
[rebalance]
interval_steps = 4
window_steps = 4
{extra}
[axes]
"rebalance.policy" = ["static", "periodic"]
"""


def _study(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "policies.toml"
    p.write_text(STUDY.format(extra=extra))
    return p


def test_policies_as_sweep_axes(tmp_path) -> None:
    _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)  # 16 steps, a shift at 8
    out = tmp_path / "run"
    assert main(["sweep", str(_study(tmp_path)), "--serial", "--out", str(out)]) == 0
    res = pd.read_parquet(out / "results.parquet")
    assert list(res["policy"]) == ["static", "periodic"]
    # the first 4 steps fit, then windows of 4 steps start at 4, 8, 12: static keeps its
    # layout, periodic re-places at 8 and 12
    assert list(res["rebalances"]) == [0, 2]
    assert res["bytes_migrated"].iloc[0] == 0 and res["bytes_migrated"].iloc[1] > 0
    timeline = pd.read_parquet(out / "timeline.parquet")
    assert timeline.groupby("cell").size().tolist() == [3, 3]
    page = (out / "report.html").read_text()
    assert "rebalance_bytes.png" in page and "policy=periodic" in page


@pytest.mark.parametrize(("extra", "message"), [
    ("polcy = 'static'", "rebalance.polcy: unknown key; known: policy, interval_steps"),
    ("threshold = -1.0", "rebalance: threshold must be >= 0 and < 10, got -1.0"),
    ("migration = 'async'", "--migration async: the moves' overlap with serving"),
    ("window_steps = 16", "rebalance.window_steps 16: the trace spans 16 steps"),
])
def test_bad_rebalance_keys_stop_the_sweep_before_it_starts(tmp_path, extra, message) -> None:
    _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    text = _study(tmp_path).read_text()
    if extra.startswith("window_steps"):
        text = text.replace("window_steps = 4", extra)
    else:
        text = text.replace("window_steps = 4\n", f"window_steps = 4\n{extra}\n")
    (tmp_path / "policies.toml").write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study_file(tmp_path / "policies.toml")


def test_a_rebalancing_cell_needs_a_trace_with_steps(tmp_path) -> None:
    text = STUDY.format(extra="").replace('source = "drift.parquet"', 'source = "synthetic"')
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(InputError, match="a rebalancing cell replays a trace file with steps"):
        load_study_file(tmp_path / "s.toml")


def test_a_des_rebalancing_cell_is_counted_as_rebalance_counts_it(tmp_path) -> None:
    from experiments.rebalance_window import sim_config
    from experiments.studies.des_estimate import cell_des_hop_events, with_des_counts
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table
    from simulator.des_cost import first_step_work

    _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    study = load_study_file(_study(tmp_path, 'mode = "des"'))
    # what `rebalance --mode des` says (de-duplicated dispatch, the default): the first
    # step's events x 1,024 tokens (16 steps of 64) / 64 per step
    routes = build_route_table(build_fat_tree(4, 4, None))
    work, step_tokens = first_step_work(tmp_path / "drift.parquet", routes, None,
                                        sim_config(True).traffic)
    assert step_tokens == 64
    for cell in study.cells:
        assert cell_des_hop_events(cell.config) == pytest.approx(work.hop_events * 1024 / 64)
        counted = with_des_counts([cell.config], [cell.work])[0]
        assert counted.des_hop_events == pytest.approx(work.hop_events * 16)
    # an analytic rebalancing cell keeps its per-token count
    analytic = load_study_file(_study(tmp_path, 'mode = "analytic"')).cells[0]
    assert cell_des_hop_events(analytic.config) is None


def test_rebalance_says_its_des_time_from_the_same_count(tmp_path, monkeypatch) -> None:
    from experiments.commands.rebalance import _time_line
    from experiments.rebalance_config import RebalanceConfig
    from experiments.rebalance_window import sim_config
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table
    from simulator.des_cost import first_step_work
    from traces.infra import limits

    _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    routes = build_route_table(build_fat_tree(4, 4, None))
    work, _ = first_step_work(tmp_path / "drift.parquet", routes, None, sim_config(True).traffic)
    monkeypatch.setattr(limits, "CPU_S_PER_HOP_EVENT", 1.0)  # so that a line is said at all
    line = _time_line(tmp_path / "drift.parquet", routes, RebalanceConfig(mode="des"), 1024, 3)
    # 16 steps of 64 tokens: the first step's events x 16
    assert line == limits.des_time_line("rebalance", work.hop_events * 16)
    assert line is not None and f"{work.hop_events * 16:.2g} hop events" in line
