"""The compute-balance guard by decomposition (placement.balance) against brute force.

The MIP fallback for small models is switched off, so the decomposition alone answers:
its bound is below the best balanced layout, its layout is balanced and costs at least that.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import placement.balance as balance
from placement import SolveStatus, check_layout, expected_cost, solve_placement
from tests.placement_fixtures import feasible_layouts
from tests.test_placement_variants import OPTS, _problem


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.2, 0.4, 0.8]))
def test_bound_at_most_the_best_balanced_layout_at_most_the_result(seed, eps):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(balance, "EXACT_MAX_BINARIES", 0)
        problem = _problem(seed, balance_eps=eps)
        res = solve_placement(problem, "ilp-load", OPTS)
    feasible = list(feasible_layouts(problem))  # the checker enforces the balance rule
    if not feasible:
        assert not res.status.has_layout
        return
    best = min(expected_cost(problem, lay) for lay in feasible)
    assert res.solver.dual_bound <= best * (1 + 1e-9)
    if res.layout is not None:
        assert check_layout(problem, res.layout) == []
        assert res.objective >= best * (1 - 1e-9)
        assert res.solver.objective == pytest.approx(res.objective)


def test_small_models_still_get_the_exact_mip():
    # 2 layers x 3 experts on 4 GPUs: 24 binaries, below EXACT_MAX_BINARIES.
    problem = _problem(8, balance_eps=0.6)
    res = solve_placement(problem, "ilp-load", OPTS)
    assert res.status is SolveStatus.OPTIMAL
    assert res.info["decomposition_bound"] <= res.objective * (1 + 1e-9)


def test_repair_takes_the_cheapest_swap_that_removes_the_excess():
    # One layer, experts 0.5, 0.3, 0.1, 0.1: GPU 0 holds the first two (load 0.8), GPU 1 the
    # others (0.2); cap 0.65, so GPU 0 is 0.15 over.  Swaps that fix it and keep GPU 1 within
    # the cap: 0.5 <-> 0.1 (moves 0.4, GPU 1 at 0.6) and 0.3 <-> 0.1 (moves 0.2, GPU 1 at
    # 0.4).  With c = (0, 1) their cost increases are 0.4 and 0.2: the second is taken.
    act = np.array([[0.5, 0.3, 0.1, 0.1]])
    gpu = np.array([[0, 0, 1, 1]])
    out = balance.repair_caps(act, gpu, np.array([0.0, 1.0]), 0.65, deadline=float("inf"))
    assert out[0, 1] == 1 and out[0, 0] == 0
    loads = np.bincount(out.ravel(), weights=act.ravel(), minlength=2)
    assert loads == pytest.approx([0.6, 0.4])
