"""Budgeted dedup re-placement by path-relinking: the within-server relabelling (symmetry),
the walk towards the full re-fit and the hull that spends the budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ExpertLayout, SolverOptions, solve_placement
from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import dedup_cost, layer_gpu_loads, server_cost, server_distance
from placement.migration import plan_migration
from placement.migration_dedup import LayerSearch, _hull_prefixes, replace_dedup_with_moves
from placement.migration_walk import (
    WalkStep,
    hull_segments,
    merge_by_rate,
    relabel_within_servers,
    unwalk_layer,
    walk_layer,
)
from tests.test_rebalance_dedup import _hand_case, _problem


def _search(problem, current: ExpertLayout, horizon_per_token: float, goal: float):
    """Layer 0's search from ``current`` as :func:`replace_dedup_with_moves` builds it (no
    move price; the sample's tokens times ``horizon_per_token``)."""
    sample = problem.token_sample
    o = sample.origin_gpu.astype(np.int64)
    scale = horizon_per_token * (problem.dispatch_bytes + problem.combine_bytes) / 2
    E, G = problem.num_experts, problem.num_gpus
    return LayerSearch(problem, sample.experts[:, 0, :].astype(np.int64),
                       server_cost(problem, "hops")[o], server_distance(problem)[o],
                       problem.gpu_server[o], current.primary[0].astype(np.int64), scale,
                       np.zeros((E, G)), goal)


def _random_case(seed: int, E: int = 8, T: int = 40):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.choice(E, 2, replace=False) for _ in range(T)])
    problem = _problem(x, rng.integers(0, 4, T), E)
    slots = np.repeat(np.arange(4), E // 4)
    current = ExpertLayout.from_primary(rng.permutation(slots)[None], 4)
    new = ExpertLayout.from_primary(rng.permutation(slots)[None], 4)
    return problem, current, new


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_relabelling_never_changes_copies_or_balance_and_never_adds_moves(seed) -> None:
    problem, current, new = _random_case(seed)
    out = relabel_within_servers(problem, current, new, SolverOptions())
    gs = problem.gpu_server
    assert np.array_equal(gs[out.primary], gs[new.primary])  # every expert keeps its server
    assert dedup_cost(problem, out).cost_per_token == pytest.approx(
        dedup_cost(problem, new).cost_per_token)
    loads = [np.sort(layer_gpu_loads(problem, lay)) for lay in (new, out)]
    np.testing.assert_allclose(loads[0], loads[1])
    moves = [plan_migration(current, lay, problem.distance).num_moves for lay in (new, out)]
    assert moves[1] <= moves[0]


def test_relabelling_hand_computed() -> None:
    # 4 GPUs, servers {0, 1} and {2, 3}, 4 experts.  In force: expert e on GPU e.  New: the
    # two servers' GPUs swapped inside each server, [1, 0, 3, 2]: every expert moves (4
    # moves) for nothing.  Relabelled: [0, 1, 2, 3], no move.
    problem, current = _hand_case()
    new = ExpertLayout.from_primary(np.array([[1, 0, 3, 2]]), 4)
    out = relabel_within_servers(problem, current, new, SolverOptions())
    assert out.primary[0].tolist() == [0, 1, 2, 3]


def test_hull_spans_steps_that_gain_only_together() -> None:
    # steps (gain, moves): (0, 1) (3, 1) (1, 1): prefixes (0, 0) (1, 0) (2, 3) (3, 4).
    # From (0, 0): rates 0, 3/2, 4/3: the hull goes to (2, 3), then to (3, 4) at rate 1.
    steps = [WalkStep(0, 1, 0.0, 1), WalkStep(2, 3, 3.0, 1), WalkStep(4, 5, 1.0, 1)]
    segs = hull_segments(steps)
    assert [(s.gain, s.moves, s.end) for s in segs] == [(3.0, 2, 2), (1.0, 1, 3)]
    # with a second layer's hull (one segment, rate 2, 1 move): a budget of 2 takes rate 2,
    # then rate 1.5 needs 2 moves with 1 left and its layer stops; 3 takes both; 4 all three
    other = hull_segments([WalkStep(0, 1, 2.0, 1)])
    assert merge_by_rate([segs, other], 2) == [0, 1]
    assert merge_by_rate([segs, other], 3) == [1, 1]
    assert merge_by_rate([segs, other], 4) == [2, 1]


def test_walk_reaches_the_target_on_the_hand_case() -> None:
    # the hand case's best layout puts experts 0 and 2 together: target [0, 2, 1, 3].  The walk
    # swaps 1 and 2 (one step, 2 moves) and its gain is the 3 copies saved (see
    # test_move_limited_search_hand_computed: 3 tokens x 2 d x scale)
    problem, current = _hand_case()
    scale = (problem.dispatch_bytes + problem.combine_bytes) / 2
    search = _search(problem, current, 1.0, 4.0)
    steps = walk_layer(search, np.array([0, 2, 1, 3]), Deadline.after(10.0))
    assert [(s.a, s.b, s.moves) for s in steps] in ([(1, 2, 2)], [(2, 1, 2)])
    assert steps[0].gain == pytest.approx(3 * 2 * float(problem.distance[0, 2]) * scale)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(0, 8))
def test_budget_is_never_exceeded_and_the_free_walk_matches_the_full_refit(seed, budget) -> None:
    problem, current, _ = _random_case(seed)
    fresh = solve_placement(problem, "dedup").layout
    res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh, 100.0,
                                   10.0, 0.0, budget * 10.0 + 5.0)
    moves = plan_migration(current, res.layout, problem.distance).num_moves
    assert moves == res.info["moves"] <= budget
    assert np.bincount(res.layout.primary[0], minlength=4).tolist() == [2, 2, 2, 2]
    # never worse than the forward walk alone (the way back is an extra candidate)
    x = problem.token_sample.experts[:, 0, :].astype(np.int64)
    goal = float(np.bincount(fresh.primary[0][x].ravel(), minlength=4).max())
    search = _search(problem, current, 100.0 / 40, goal)
    target = relabel_within_servers(problem, current, fresh, SolverOptions())
    goal_free = walk_layer(search, target.primary[0], Deadline.after(10.0))
    walked = _hull_prefixes(current, [goal_free], budget)
    assert dedup_cost(problem, res.layout).cost_per_token <= dedup_cost(
        problem, walked).cost_per_token + 1e-9
    if budget >= 8:  # everything may move: at least as good as the full re-fit
        assert dedup_cost(problem, res.layout).cost_per_token <= dedup_cost(
            problem, fresh).cost_per_token + 1e-9


def test_the_way_back_buys_the_group_worth_most_first() -> None:
    # 8 experts, 2 slots per GPU; GPUs 0, 1 on server A, 2, 3 on B; every token starts on GPU
    # 0 (server A).  In force: A holds the unused experts 4-7, B holds 0-3.  One token uses
    # {0, 1}, three use {2, 3}: 4 remote copies.  Target: 0-3 on A (no copy), 8 moves.  A
    # group saves its copy only once both its experts are on A: 4 moves (its two experts and
    # two unused ones the other way).  Walking forward, every first swap gains nothing and
    # the walk starts with experts 0 and 1 (the lower ids), so its hull is one segment of all
    # 8 moves and a budget of 4 buys nothing.  Walking back from the target, {0, 1} is broken
    # first (1 copy lost against 3): read forward, 4 moves save the 3 copies of {2, 3}.
    x = np.array([[0, 1], [2, 3], [2, 3], [2, 3]])
    problem = _problem(x, np.zeros(4, dtype=np.int64), 8)
    current = ExpertLayout.from_primary(np.array([[2, 2, 3, 3, 0, 0, 1, 1]]), 4)
    target = ExpertLayout.from_primary(np.array([[0, 1, 0, 1, 2, 2, 3, 3]]), 4)
    assert dedup_cost(problem, current).copies_per_token_layer == pytest.approx(1.0)  # 4 / 4
    w = 10.0
    res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, target, 4.0,
                                   w, 0.0, 4 * w)
    assert res.info["moves"] == 4 and res.info["kept"] == "walk back"
    assert dedup_cost(problem, res.layout).copies_per_token_layer == pytest.approx(0.25)
    gs = problem.gpu_server
    assert gs[res.layout.primary[0, [2, 3]]].tolist() == [0, 0]  # {2, 3} on server A
    # the forward walk alone: one hull segment of 8 moves, nothing within 4
    search = _search(problem, current, 1.0, 4.0)
    walk = walk_layer(search, target.primary[0], Deadline.after(10.0))
    assert [s.moves for s in hull_segments(walk)] == [8]
    back = unwalk_layer(search, Deadline.after(10.0))
    assert (search.gpu == current.primary[0]).all() and sum(s.moves for s in back) == 8
    assert [s.moves for s in hull_segments(back)] == [4, 4]
