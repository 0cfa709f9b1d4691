"""Rebalancing with dedup's own objective: the window's token sample, the move-limited swap
search (hand-computed, budget property), and whole runs against an independent count."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.pipeline import build_problem
from experiments.rebalance import run_rebalance
from experiments.rebalance_config import RebalanceConfig
from experiments.rebalance_sample import WindowSample
from placement import ExpertLayout, SolverOptions, solve_placement
from placement.dedup.evaluate import dedup_cost, layer_gpu_loads
from placement.migration import plan_migration, relabel_for_fewest_moves
from placement.migration_dedup import replace_dedup_with_moves
from placement.token_sample import TokenSample
from simulator.cluster.builders import LinkDefaults, build_fat_tree
from simulator.cluster.paths import build_route_table
from tests.test_rebalance import MODEL, _drift
from traces import SynthConfig, generate_trace
from traces.io import iter_trace
from traces.origins import resolve_origins

FEW_LAYERS = replace(MODEL, moe_layer_indices=(1, 2, 3))  # whole runs: 3 MoE layers
SMALL = build_route_table(build_fat_tree(4, 2, LinkDefaults(gpus_per_server=2)))  # 4 GPUs


def _problem(experts: np.ndarray, origins: np.ndarray, num_experts: int):
    """One MoE layer of ``num_experts`` experts, one slot per GPU and layer where E = 4."""
    m = replace(MODEL, moe_layer_indices=(1,), num_routed_experts=num_experts,
                top_k=experts.shape[1])
    T = experts.shape[0]
    p = np.bincount(experts.ravel(), minlength=num_experts)[None, :] / T
    a = np.zeros((1, num_experts, SMALL.num_gpus))
    np.add.at(a, (0, experts.ravel(), np.repeat(origins, experts.shape[1])), 1.0 / T)
    slots = num_experts // SMALL.num_gpus
    return build_problem(SMALL, m, p, a, slots_per_gpu=slots, per_layer_per_gpu=slots,
                         sample=TokenSample(experts[:, None, :], origins))


def _hand_case():
    # GPUs 0, 1 on server A, 2, 3 on B; experts e on GPU e.  All tokens start on GPU 0:
    # 3 use {0, 2}, 1 uses {1, 3}.  Each token has one remote copy (server B): 4 copies.
    # Swapping experts 1 and 2 (GPUs 1 <-> 2) leaves only the {1, 3} token remote (its two
    # routes both on B: one copy): 3 copies saved for 2 moves, the best swap (0 <-> 3 saves 1,
    # the others 0).
    x = np.array([[0, 2], [0, 2], [0, 2], [1, 3]])
    return _problem(x, np.zeros(4, dtype=np.int64), 4), ExpertLayout.from_primary(
        np.array([[0, 1, 2, 3]]), 4)


def test_move_limited_search_hand_computed() -> None:
    problem, current = _hand_case()
    d = float(problem.distance[0, 2])  # hops A -> B; a copy's round trip is 2 d
    assert d > 0 and problem.distance[1, 2] == d
    fresh = solve_placement(problem, "dedup").layout
    w, horizon = 1000.0, 4.0  # horizon = the sample's 4 tokens: scale (dispatch + combine) / 2
    scale = (problem.dispatch_bytes + problem.combine_bytes) / 2

    def run(budget_moves, move_weight=0.0):
        return replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh,
                                        horizon, w, move_weight, budget_moves * w)
    one = run(1)  # one move buys nothing: every improving change is a swap (2 moves)
    assert one.info["moves"] == 0 and np.array_equal(one.layout.primary, current.primary)
    two = run(2)
    assert two.info["moves"] == 2 and two.layout.primary[0].tolist() == [0, 2, 1, 3]
    assert dedup_cost(problem, two.layout).copies_per_token_layer == pytest.approx(1 / 4)
    # 3 tokens x round trip 2 d saved x scale vs the price of 2 moves of W bytes over d hops:
    # 6 d scale = 2 mw W d  <=>  mw = 3 scale / W
    even = 3 * scale / w
    assert run(2, even * 0.99).info["moves"] == 2
    assert run(2, even * 1.01).info["moves"] == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(0, 8), price=st.sampled_from([0, 1e-6]))
def test_budget_is_never_exceeded_and_balance_never_ends_worse(seed, budget, price) -> None:
    rng = np.random.default_rng(seed)
    E, T = 8, 40
    x = np.stack([rng.choice(E, 2, replace=False) for _ in range(T)])
    problem = _problem(x, rng.integers(0, 4, T), E)
    current = ExpertLayout.from_primary(rng.permutation(np.repeat(np.arange(4), 2))[None], 4)
    fresh = relabel_for_fewest_moves(problem, current, solve_placement(problem, "dedup").layout,
                                     SolverOptions())
    res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh, 100.0,
                                   10.0, price, budget * 10.0 + 5.0)
    moves = plan_migration(current, res.layout, problem.distance).num_moves
    assert moves == res.info["moves"] <= budget
    assert np.bincount(res.layout.primary[0], minlength=4).tolist() == [2, 2, 2, 2]
    busiest = [layer_gpu_loads(problem, lay).max() for lay in (current, fresh, res.layout)]
    assert busiest[2] <= max(busiest[0], busiest[1]) + 1e-9
    if budget >= E and price == 0:  # unlimited and free: never worse than either layout
        costs = [dedup_cost(problem, lay).cost_per_token for lay in (current, fresh)]
        assert dedup_cost(problem, res.layout).cost_per_token <= min(costs) + 1e-9


def test_window_sample_is_the_smallest_keys_of_the_last_chunks() -> None:
    # chunks of 7, 0, 12, 3 and 9 tokens (each added in two parts), a window of 3 chunks and 6
    # tokens kept: the 6 tokens of the last 3 chunks (12 + 3 + 9) with the smallest keys, the
    # keys drawn in stream order from the seed
    sizes, size, seed = [7, 0, 12, 3, 9], 6, 5
    trace = generate_trace(SynthConfig(MODEL, num_tokens=sum(sizes), seq_len=1, num_gpus=4,
                                       seed=2))
    keeper = WindowSample(size, chunks=3, num_gpus=4, seed=seed)
    edges = np.cumsum([0, *sizes])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mid = (lo + hi) // 2
        for part in (np.arange(lo, mid), np.arange(mid, hi)):
            if part.size:
                keeper.add(trace.take(part))
        keeper.close_chunk()
    keys = np.random.default_rng(seed).random(edges[-1])
    window = np.arange(edges[2], edges[-1])
    want = window[np.argsort(keys[window])[:size]]
    got = keeper.sample()
    assert got is not None and got.num_tokens == size

    def rows(experts, origins):
        flat = np.column_stack([experts.reshape(len(origins), -1), origins])
        return sorted(map(tuple, flat.tolist()))

    assert rows(got.experts, got.origin_gpu) == rows(
        trace.experts[want], resolve_origins(trace, 4)[want])


@pytest.fixture(scope="module")
def routes():
    return build_route_table(build_fat_tree(4, 4))  # 32 GPUs, 4 servers


def _window_tokens(path, lo, hi, num_gpus) -> TokenSample:
    """Every token of steps lo..hi-1 (read again: an independent path)."""
    ex, org = [], []
    for b in iter_trace(path):
        keep = (b.step >= lo) & (b.step < hi)
        ex.append(b.experts[keep])
        org.append(resolve_origins(b, num_gpus)[keep])
    return TokenSample(np.concatenate(ex), np.concatenate(org))


@pytest.mark.parametrize("policy", ["periodic", "threshold"])
def test_dedup_runs_count_copies_as_the_independent_rule(routes, tmp_path, policy) -> None:
    path = _drift(tmp_path / "drift.parquet", tokens=1024, step_tokens=128, model=FEW_LAYERS)
    config = RebalanceConfig(strategy="dedup", policy=policy, interval_steps=4, window_steps=4,
                             sample_tokens=256, threshold=0.0)
    res = run_rebalance(path, routes, config, SolverOptions(time_limit_s=30))
    t = res.timeline
    assert (t["decision"] == "rebalance").sum() >= 1
    layout = None
    p = np.ones((FEW_LAYERS.num_moe_layers, FEW_LAYERS.num_routed_experts))
    for _, row in t.iterrows():
        layout = res.layouts.get(int(row["step_start"]), layout)
        sample = _window_tokens(path, row["step_start"], row["step_stop"], 32)
        problem = build_problem(routes, FEW_LAYERS, p, sample=sample)
        ref = dedup_cost(problem, layout)
        assert row["remote_copies_per_token_layer"] == pytest.approx(ref.copies_per_token_layer)


def test_budgeted_dedup_run_stays_within_the_budget(routes, tmp_path) -> None:
    path = _drift(tmp_path / "drift.parquet", tokens=1024, step_tokens=128, model=FEW_LAYERS)
    from placement.migration import expert_weight_bytes

    w = expert_weight_bytes(FEW_LAYERS, 1.0)
    config = RebalanceConfig(strategy="dedup", policy="periodic", interval_steps=4,
                             window_steps=4, sample_tokens=256, move_budget_bytes=20 * w)
    t = run_rebalance(path, routes, config, SolverOptions(time_limit_s=30)).timeline
    assert (t["bytes_migrated"] <= 20 * w).all() and t["bytes_migrated"].sum() > 0


def test_migration_aware_strategies_are_the_ones_with_a_model() -> None:
    from placement.migration import ASSIGNMENT_STRATEGIES
    from placement.migration_dedup import METRICS
    from placement.strategies import MIGRATION_AWARE

    assert set(ASSIGNMENT_STRATEGIES) | set(METRICS) | {"eplb"} == MIGRATION_AWARE


@pytest.mark.parametrize("knob", [{"move_weight": 1.0}, {"move_budget_bytes": 1e9}])
def test_a_budget_or_price_the_strategy_cannot_honour_is_refused(knob) -> None:
    from traces.infra.errors import InputError

    with pytest.raises(InputError, match="strategy greedy has no migration-aware re-placement"):
        RebalanceConfig(strategy="greedy", **knob)
