"""The bound on the copies gain within a move budget (placement.migration_dedup_bound):
hand-computed cases, brute force over every layout of a tiny layer, and the walk never
beating it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ExpertLayout, SolverOptions, solve_placement
from placement.dedup.evaluate import dedup_cost
from placement.migration import plan_migration
from placement.migration_dedup import replace_dedup_with_moves
from placement.migration_dedup_bound import (
    LayerCurve,
    budget_bound,
    knapsack_bound,
    layer_cost,
    layer_curve,
    layer_tokens,
)
from tests.test_rebalance_dedup import _hand_case, _problem


def test_layer_curve_hand_computed() -> None:
    # _hand_case: servers A = GPUs {0, 1}, B = {2, 3}, expert e on GPU e, all 4 tokens from
    # GPU 0: three use {0, 2}, one {1, 3}: 4 remote copies (server B), each a round trip 2 d.
    # A server holds 2 experts: one move alone fits nowhere (f(1) = f(0) = 4 copies); the swap
    # 1 <-> 2 leaves only the {1, 3} token remote: f(2) = f(4) = 1 copy (both pairs cannot
    # share server A).
    problem, current = _hand_case()
    rt = 2 * float(problem.distance[0, 2])
    curve = layer_curve(problem, 0, current, (0, 1, 2, 4), SolverOptions())
    assert curve.bound == pytest.approx((4 * rt, 4 * rt, rt, rt))
    assert curve.best == pytest.approx(curve.bound)  # solved to optimality


def test_knapsack_hand_computed() -> None:
    # Grid (0, 2, 4).  Layer a: costs at least 10, 4, 3; layer b: 10, 7, 1.  Point 2 spends at
    # least 1 move, point 4 at least 3.  Budget 4: a at 2 (1 move) + b at 4 (3 moves) = 4 + 1.
    # Budget 3: a at 2 + b at 2 = 11 or b at 4 alone = 10 + 1 = 11; a at 4 alone = 13.
    a = LayerCurve((0, 2, 4), (10.0, 4.0, 3.0), (10.0, 4.0, 3.0))
    b = LayerCurve((0, 2, 4), (10.0, 7.0, 1.0), (10.0, 7.0, 1.0))
    assert knapsack_bound([a, b], 4) == pytest.approx(5.0)
    assert knapsack_bound([a, b], 3) == pytest.approx(11.0)
    assert knapsack_bound([a, b], 0) == pytest.approx(20.0)


def _random_case(seed: int, E: int = 8, T: int = 30):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.choice(E, 3, replace=False) for _ in range(T)])
    problem = _problem(x, rng.integers(0, 4, T), E)
    current = ExpertLayout.from_primary(rng.permutation(np.repeat(np.arange(4), E // 4))[None], 4)
    return problem, current


def _brute_force(problem, current: ExpertLayout, k: int) -> float:
    """Lowest layer cost over every server assignment (4 experts a server) moving <= k."""
    tokens = layer_tokens(problem, 0)
    cur = problem.gpu_server[current.primary[0]]
    E = problem.num_experts
    best = np.inf
    for on_a in itertools.combinations(range(E), E // 2):
        servers = np.ones(E, dtype=np.int64)
        servers[list(on_a)] = 0
        if (servers != cur).sum() <= k:
            best = min(best, layer_cost(tokens, servers))
    return float(best)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_bound_equals_brute_force_on_a_tiny_layer(seed: int) -> None:
    # 8 experts, 2 servers of 4 slots: all 70 server assignments enumerated per budget.
    problem, current = _random_case(seed)
    grid = (0, 1, 2, 3, 4, 6, 8)
    curve = layer_curve(problem, 0, current, grid, SolverOptions())
    exact = [_brute_force(problem, current, k) for k in grid]
    assert curve.bound == pytest.approx(exact, abs=1e-6)
    assert curve.best == pytest.approx(exact, abs=1e-6)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), moves=st.integers(0, 8))
def test_walk_never_beats_the_bound(seed: int, moves: int) -> None:
    problem, current = _random_case(seed)
    fresh = solve_placement(problem, "dedup").layout
    T = problem.token_sample.num_tokens
    res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh, T, 1.0,
                                   0.0, float(moves))
    assert plan_migration(current, res.layout, problem.distance).num_moves <= moves
    bound = budget_bound(problem, current, moves, range(9), SolverOptions())
    got = dedup_cost(problem, res.layout).cost_per_token
    assert bound.cost_bound_per_token <= got + 1e-9
