"""Placement over time: migration plans, migration-aware re-placement, policies, the command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main
from experiments.pipeline import build_problem
from experiments.rebalance import run_rebalance
from experiments.rebalance_config import RebalanceConfig
from experiments.rebalance_window import WindowMetrics
from placement import ExpertLayout, SolverOptions, expected_cost, solve_placement
from placement.migration import (
    expert_weight_bytes,
    plan_migration,
    relabel_for_fewest_moves,
    replace_with_move_cost,
)
from simulator.analytic import count_traffic
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.traffic_config import TrafficConfig
from traces import SynthConfig, generate_trace, model_preset
from traces.io import write_blocks
from traces.model import ModelSpec
from traces.synthetic import TenantSpec

MODEL = model_preset("deepseek-moe-16b")


@pytest.fixture(scope="module")
def routes():
    return build_route_table(build_fat_tree(4, 4))  # 32 GPUs, 4 servers


def _drift(path: Path, tokens: int = 2048, step_tokens: int = 256,
           model: ModelSpec = MODEL) -> Path:
    """Two tenants on server halves, then the halves swap: a workload shift at the midpoint."""
    lo, hi = tuple(range(16)), tuple(range(16, 32))

    def phase(chat, code):
        return generate_trace(SynthConfig(
            model, num_tokens=tokens, seq_len=16, step_tokens=step_tokens, num_gpus=32, seed=1,
            tenants=(TenantSpec(1.0, chat, 0.9, name="chat"), TenantSpec(1.0, code, 1.3))))

    a, b = phase(lo, hi), phase(hi, lo)
    b = replace(b, step=b.step + a.step.max() + 1, seq_id=b.seq_id + a.seq_id.max() + 1)
    write_blocks(path, [a, b])
    return path


def test_expert_weight_bytes_of_r1() -> None:
    # 3 x 7168 x 2048 = 44,040,192 parameters; FP8 1 byte, BF16 2
    r1 = model_preset("deepseek-r1")
    assert expert_weight_bytes(r1, 1) == 44_040_192
    assert expert_weight_bytes(r1, 2) == 88_080_384


def test_plan_migration_hand_computed() -> None:
    # 1 layer, 3 experts, 4 GPUs; GPUs 0,1 on server A and 2,3 on B (distance 0 inside, 2 across)
    d = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [2, 2, 0, 0], [2, 2, 0, 0]], dtype=float)
    old = ExpertLayout(np.array([[[0, -1], [1, 2], [3, -1]]]), 4)
    new = ExpertLayout(np.array([[[0, -1], [3, 1], [2, 0]]]), 4)
    plan = plan_migration(old, new, d)
    # expert 0 stays; expert 1 gains GPU 3 (nearest old copy GPU 2, same server) and keeps 1;
    # expert 2 gains GPU 2 (from 3) and GPU 0 (from 3, the only copy)
    rows = sorted(zip(plan.layer, plan.expert, plan.src_gpu, plan.dst_gpu, strict=True))
    assert rows == [(0, 1, 2, 3), (0, 2, 3, 0), (0, 2, 3, 2)]
    assert plan.pair_counts(4)[3].tolist() == [1, 0, 1, 0]


def _problem(routes, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(64), size=MODEL.num_moe_layers) * MODEL.top_k
    a = p[:, :, None] * rng.dirichlet(np.ones(32))[None, None, :]
    return build_problem(routes, MODEL, p, a)


def test_move_price_zero_is_full_replacement_and_high_price_moves_nothing(routes) -> None:
    problem = _problem(routes)
    current = solve_placement(_problem(routes, seed=1), "ilp-origin").layout
    full = solve_placement(problem, "ilp-origin")
    w = expert_weight_bytes(MODEL, 1)
    free = replace_with_move_cost(problem, SolverOptions(), "ilp-origin", current, 1e4, w, 0.0)
    assert free.objective == pytest.approx(full.objective, rel=1e-9)
    stuck = replace_with_move_cost(problem, SolverOptions(), "ilp-origin", current, 1e4, w, 1e9)
    assert plan_migration(current, stuck.layout, problem.distance).num_moves == 0
    assert stuck.objective == pytest.approx(expected_cost(problem, current), rel=1e-12)


def test_relabelling_keeps_the_cost_and_moves_no_more(routes) -> None:
    problem = _problem(routes)
    current = solve_placement(problem, "eplb").layout
    shuffled = np.random.default_rng(3).permutation(32)
    new = ExpertLayout(shuffled[current.expert_gpus], 32)  # same layout, GPUs renamed
    back = relabel_for_fewest_moves(problem, current, new, SolverOptions())
    assert expected_cost(problem, back) == pytest.approx(expected_cost(problem, new))
    before = plan_migration(current, new, problem.distance).num_moves
    after = plan_migration(current, back, problem.distance).num_moves
    assert after <= before


def test_window_network_bytes_equal_the_analytic_counter(routes, tmp_path) -> None:
    trace = generate_trace(SynthConfig(MODEL, num_tokens=512, seq_len=16, num_gpus=32, seed=4))
    layout = solve_placement(_problem(routes), "ilp-load").layout
    win = WindowMetrics(routes, layout, keep_blocks=False)
    win.add(trace)
    row = win.row(server_dedup=True)
    for dedup, key in ((True, "network_bytes_dedup"), (False, "network_bytes_no_dedup")):
        traffic = TrafficConfig(dispatch="deepep-normal" if dedup else "all-to-all")
        ref = count_traffic([trace], routes, layout.expert_gpus, traffic)
        assert row[key] == ref.network_bytes
    assert row["hops_per_token"] == pytest.approx(
        count_traffic([trace], routes, layout.expert_gpus).hops_per_token)


def test_policies_on_a_workload_shift(routes, tmp_path) -> None:
    path = _drift(tmp_path / "drift.parquet")
    config = RebalanceConfig(strategy="ilp-origin", policy="static", interval_steps=4,
                             window_steps=4)
    static = run_rebalance(path, routes, config).timeline
    periodic = run_rebalance(path, routes, replace(config, policy="periodic")).timeline
    second = static["step_start"] >= 8  # the tenants swapped servers at step 8
    assert (periodic["hops_per_token"][second].mean()
            < static["hops_per_token"][second].mean() * 0.9)
    assert static["bytes_migrated"].sum() == 0 and periodic["bytes_migrated"].sum() > 0
    assert list(static["decision"]) == ["first", "keep", "keep"]


def test_origins_override_the_recorded_ones(routes, tmp_path) -> None:
    path = _drift(tmp_path / "drift.parquet")
    config = RebalanceConfig(strategy="round-robin", policy="static", interval_steps=8,
                             window_steps=4)
    recorded = run_rebalance(path, routes, config)
    pinned = run_rebalance(path, routes, replace(config, origins="tenants:0"))
    assert recorded.origins_warning is None  # the tenants cover all 4 servers
    # every token starts on server 0: 8 of the 32 GPUs send tokens
    assert "cover 8 of the cluster's 32 GPUs" in str(pinned.origins_warning)
    assert not np.allclose(recorded.timeline["hops_per_token"], pinned.timeline["hops_per_token"])


def test_rebalance_command_and_its_bad_input(routes, tmp_path, capsys) -> None:
    path = _drift(tmp_path / "drift.parquet")
    assert main(["topology", "build", "fat-tree", "--param", "k=4", "--param", "num_servers=4",
                 "--out", str(tmp_path / "c.json"), "--overwrite"]) == 0
    base = ["rebalance", "--trace", str(path), "--topology", str(tmp_path / "c.json"),
            "--strategy", "ilp-origin", "--interval", "4", "--window", "4"]
    assert main([*base, "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"timeline.parquet", "summary.json",
                                                "timeline.png", "layouts"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rebalances"] == 2 and "break_even_step" in summary
    capsys.readouterr()
    bad = [
        (["--window", "99"], "--window 99: the trace spans 16 steps"),
        (["--interval", "0"], "argument --interval: must be >= 1 steps, got 0"),
        (["--move-budget", "-1"], "argument --move-budget: must be >= 0 bytes, got -1.0"),
        (["--origins", "racks:1"], "--origins 'racks:1': unknown origin model 'racks'"),
        (["--origins", "tenants:0-4"], "server 4 is outside the cluster's servers 0..3"),
        (["--policy", "static", "--move-weight", "1"], "--policy static"),  # --interval too
        (["--migration", "async"], "--migration async: the moves' overlap with serving"),
        (["--strategy", "nope"], "--strategy 'nope'"),
        (["--strategy", "dedup", "--sample-tokens", "0"],
         "argument --sample-tokens: must be >= 1 and <= 2^20 tokens, got 0"),
    ]
    for extra, message in bad:
        try:
            code = main([*base, *extra, "--out", str(tmp_path / "bad")])
        except SystemExit as exc:  # argparse refuses flags outside their range
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
        assert not (tmp_path / "bad").exists()
    for extra, message in [(["--interval", "0"], "argument --interval: must be >= 1"),
                           (["--move-budget", "-1"], "argument --move-budget: must be >= 0")]:
        with pytest.raises(SystemExit) as exc:  # refused by the flag's range, before any work
            main([*base, *extra, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and message in err and err.count("\n") == 0, err
    flat = generate_trace(SynthConfig(MODEL, num_tokens=64, seq_len=8, num_gpus=32, seed=0))
    write_blocks(tmp_path / "nosteps.parquet", [replace(flat, step=None)])
    assert main(["rebalance", "--trace", str(tmp_path / "nosteps.parquet"), "--topology",
                 str(tmp_path / "c.json"), "--out", str(tmp_path / "bad")]) == 2
    assert "records no steps" in capsys.readouterr().err


def test_rebalance_tells_its_time_order_and_windows_unless_quiet(tmp_path, capsys,
                                                                 monkeypatch) -> None:
    from traces.infra import limits

    path = _drift(tmp_path / "drift.parquet")
    assert main(["topology", "build", "fat-tree", "--param", "k=4", "--param", "num_servers=4",
                 "--out", str(tmp_path / "c.json")]) == 0
    monkeypatch.setattr(limits, "LONG_RUN_S", 0.0)  # every run counts as long
    base = ["rebalance", "--trace", str(path), "--topology", str(tmp_path / "c.json"),
            "--strategy", "round-robin", "--interval", "4", "--window", "4"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "a"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "rebalance: expect CPU time of the order of" in err, err
    # 16 steps, the first 4 to fit: windows at steps 4, 8, 12, each ticked on the bar
    assert "3window" in err.replace(" ", ""), err
    assert main([*base, "--out", str(tmp_path / "b"), "-q"]) == 0
    assert capsys.readouterr().err == ""
