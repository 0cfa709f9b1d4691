"""A study cell's DES replay counted before it runs (experiments/studies/des_estimate.py): the
hop events the driver counts on a stand-in (the first micro-batch, placed round-robin) against
the hop events the cell's real replay steps, and the line that says so (counts, never time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import STUDY_MODEL_TOML
from test_des_cost import counting_trains

from experiments.studies import load_study_file
from experiments.studies.cell import evaluate_cell
from experiments.studies.des_estimate import cell_des_hop_events, with_des_counts
from traces.infra import limits

# tiny-moe (4 MoE layers, 16 experts, top-2) on a k=4 fat tree of 4 servers x 2 GPUs
STUDY = """
[study]
name = "des-estimate"
""" + STUDY_MODEL_TOML + """[topology]
family = "fat-tree"
params = {{ k = 4, num_servers = 4 }}
links = {{ gpus_per_server = 2 }}
[trace]
source = "synthetic"
fit_tokens = 256
replay_tokens = 1024
zipf_exponent = 1.2
[sim]
microbatch_tokens = {microbatch}
dispatch = "{scheme}"
[axes]
"strategy.name" = ["round-robin", "contiguous", "greedy"]
"""

# the stand-in's layout is not the cell's: stated factor between the count and the replay
FACTOR = 2.0


def _cells(d: Path, microbatch: int, scheme: str) -> list:
    path = d / "study.toml"
    path.write_text(STUDY.format(microbatch=microbatch, scheme=scheme))
    return list(load_study_file(path).cells)


@pytest.mark.parametrize(("microbatch", "scheme"),
                         [(64, "all-to-all"), (256, "deepep-normal"), (1024, "deepep-ll")])
def test_the_count_is_within_a_factor_of_the_cells_replay(tmp_path, microbatch, scheme):
    for cell in _cells(tmp_path, microbatch, scheme):
        counted = cell_des_hop_events(cell.config)
        with counting_trains() as seen:
            evaluate_cell(cell.config)
        assert seen["hops"] > 0
        assert 1 / FACTOR <= counted / seen["hops"] <= FACTOR, (cell.axis_values, counted,
                                                                 seen["hops"])


def test_cells_differing_only_in_strategy_share_one_count(tmp_path):
    cells = _cells(tmp_path, 256, "all-to-all")
    counts = {cell_des_hop_events(c.config) for c in cells}
    assert len(counts) == 1


def test_the_line_names_the_count_and_its_stand_in():
    work = limits.CellWork(0.2 + 1024 * 4 * 2.2e-6, replay_tokens=1024, des_token_layers=4096)
    counted = work.counted(2e6)
    # 0.2 s fixed + 1024 x 4 x 0.2 us analytic + 2e6 hop events x 10 us = 0.2008192 + 20 s
    assert counted.replay_s == pytest.approx(0.2 + 1024 * 4 * 0.2e-6 + 20.0)
    line = limits.study_time_line("sweep", "cell", [counted, counted])
    assert line == (
        "sweep: 2 cells; expect CPU time of the order of 40 s for the replays (20 s per cell);"
        " the DES replays of 2 cells estimated from 4e+06 hop events, counted on each one's"
        " first micro-batch placed round-robin as a stand-in for its strategy, at about"
        " 10 us each; docs/background/estimates.md")


def test_a_cell_in_another_mode_keeps_its_per_token_count(tmp_path):
    cell = _cells(tmp_path, 256, "all-to-all")[0]
    config = {**cell.config, "sim": {**cell.config["sim"], "mode": "flow"}}
    assert cell_des_hop_events(config) is None
    assert with_des_counts([config], [cell.work]) == [cell.work]


def test_a_quiet_study_counts_nothing(tmp_path, monkeypatch):
    """Without a note to give (``-q``) the driver neither counts nor builds a line."""
    from experiments.studies import run_study, runner

    def refuse(*_args: object) -> None:
        raise AssertionError("counted although nobody reads the line")

    monkeypatch.setattr(runner, "with_des_counts", refuse)
    (tmp_path / "study.toml").write_text(STUDY.format(microbatch=256, scheme="all-to-all"))
    study = load_study_file(tmp_path / "study.toml")
    assert run_study(study, tmp_path / "run", serial=True).cells_run == len(study.cells)
    with pytest.raises(AssertionError, match="counted"):  # with a note it does count
        run_study(study, tmp_path / "again", serial=True, note=print)


@pytest.mark.parametrize("scheme", ["all-to-all", "deepep-normal", "deepep-ll"])
def test_a_replay_count_equals_the_round_robin_replay_it_stands_for(scheme):
    """``des_replay_hop_events`` (what `study failures` says before its DES replays) against
    the hop events a DES replay of the round-robin layout steps: equal for one micro-batch,
    within FACTOR for several."""
    import numpy as np

    from experiments.studies.estimates import des_replay_hop_events
    from placement.baselines import round_robin_gpus
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig
    from simulator.engine import simulate
    from simulator.microbatches import microbatches
    from simulator.traffic_config import TrafficConfig
    from traces import SynthConfig, generate_trace
    from traces.model import ModelSpec

    model = ModelSpec("small", (0, 1), 16, 0, 2, 64, num_expert_groups=1)
    routes = build_route_table(build_fat_tree(4, 4, None))
    trace = generate_trace(SynthConfig(model, num_tokens=256, num_gpus=routes.num_gpus, seed=3))
    layout = np.asarray(round_robin_gpus(2, 16, routes.num_gpus))
    traffic = TrafficConfig(dispatch=scheme)
    for microbatch, factor in ((None, 1.0), (64, FACTOR)):
        counted = des_replay_hop_events(trace, routes, microbatch, traffic)
        with counting_trains() as seen:
            simulate(list(microbatches([trace], microbatch)), routes, layout,
                     SimConfig(traffic=traffic))
        assert 1 / factor <= counted / seen["hops"] <= factor, (microbatch, counted, seen)
