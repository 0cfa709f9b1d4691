"""Budgeted dedup re-placement, step 4 (refinement): the exchanges that spend no move
(hand-computed), never costlier than the method before it, and a brute-force cross-check over
every layout within the budget on a tiny instance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ExpertLayout, SolverOptions, solve_placement
from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import dedup_cost, layer_gpu_loads
from placement.migration import plan_migration, relabel_for_fewest_moves
from placement.migration_dedup import replace_dedup_with_moves
from tests.test_rebalance_dedup import _problem
from tests.test_rebalance_walk import _search


def test_an_exchange_trades_a_move_that_buys_little_for_one_that_buys_more() -> None:
    # GPUs 0, 1 on server A, 2, 3 on B, two experts each: 0 1 | 2 3 | 4 5 | 6 7.  Every token
    # starts on GPU 0 (A): one uses {0, 4}, three use {1, 5}; each has one copy on B: 4 copies.
    x = np.array([[0, 4], [1, 5], [1, 5], [1, 5]])
    problem = _problem(x, np.zeros(4, dtype=np.int64), 8)
    current = ExpertLayout.from_primary(np.array([[0, 0, 1, 1, 2, 2, 3, 3]]), 4)
    search = _search(problem, current, 1.0, goal=8.0)  # goal: no GPU above 8 routes
    # The budget (2 moves) spent on swapping 4 (GPU 2) and 2 (GPU 1): {0, 4} is local, 3 copies.
    search.apply(4, 2)
    assert search.moves() == 2 and search.st.copies_count() == 3
    # Moved: 2 (on GPU 2, home GPU 1) and 4 (on GPU 1, home GPU 2).  Exchanges: 2 home with 3
    # or 4 (GPU 1) taking its place, 4 home with 2 or 5 (GPU 2) taking its place, and the two
    # moved experts exchanging (2, 4) (the swap back).
    assert set(search.exchanges()) == {(2, 3), (2, 4), (4, 2), (4, 5)}
    # (4, 5): 4 back home (-1 move), 5 to GPU 1 (+1): {0, 4} remote again (+1 copy), the three
    # {1, 5} local (-3): 1 copy for the same 2 moves, the best within 2 (5 must reach A; 4 and
    # 5 both there take 4 moves).
    steps = search.run(2, Deadline.after(60.0), exchanges=True)
    assert search.moves() == 2 and search.st.copies_count() == 1
    assert [(s.a, s.b, s.moves) for s in steps][:1] == [(4, 5, 0)]


def _case(seed: int, E: int):
    rng = np.random.default_rng(seed)
    T = 40
    x = np.stack([rng.choice(E, 2, replace=False) for _ in range(T)])
    problem = _problem(x, rng.integers(0, 4, T), E)
    current = ExpertLayout.from_primary(
        rng.permutation(np.repeat(np.arange(4), E // 4))[None], 4)
    fresh = relabel_for_fewest_moves(problem, current, solve_placement(problem, "dedup").layout,
                                     SolverOptions())
    return problem, current, fresh


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(0, 8), price=st.sampled_from([0, 1e-6]))
def test_refinement_is_never_costlier_than_the_method_before_it(seed, budget, price) -> None:
    problem, current, fresh = _case(seed, 8)
    res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh, 100.0,
                                   10.0, price, budget * 10.0)
    v = res.info["values"]
    before = min(v[k] for k in ("search", "walk", "walk back", "search back", "kept"))
    assert v["refined"] <= before + 1e-9
    assert plan_migration(current, res.layout, problem.distance).num_moves <= budget


@pytest.mark.parametrize("seed", range(6))
def test_brute_force_over_every_layout_within_the_budget(seed) -> None:
    # 4 experts on 4 GPUs, one each: all 24 layouts.  The result is one of those within the
    # budget and the balance goal, and none of them is cheaper than the optimum found here.
    problem, current, fresh = _case(seed, 4)
    loads = [layer_gpu_loads(problem, lay) for lay in (current, fresh)]
    allowed = np.maximum(loads[0], loads[1].max())
    for budget in range(5):
        res = replace_dedup_with_moves(problem, SolverOptions(), "dedup", current, fresh, 40.0,
                                       10.0, 0.0, budget * 10.0)
        best = np.inf
        found = False
        for perm in itertools.permutations(range(4)):
            lay = ExpertLayout.from_primary(np.array([perm]), 4)
            if plan_migration(current, lay, problem.distance).num_moves > budget:
                continue
            if (layer_gpu_loads(problem, lay) > allowed + 1e-9).any():
                continue
            best = min(best, dedup_cost(problem, lay).cost_per_token)
            found |= bool(np.array_equal(lay.primary, res.layout.primary))
        assert found  # within the budget and the balance goal
        assert dedup_cost(problem, res.layout).cost_per_token >= best - 1e-9
