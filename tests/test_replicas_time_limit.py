"""The replica MIP's time limit covers the whole call: single-copy solve, model building, MIP.

A fake clock (``time.perf_counter`` in the modules that read it) jumps past the limit at a
chosen step, so no test depends on how fast the machine is.  When the limit comes before the
flow model (fat trees) or the MIP has run, the result is the optimal single-copy layout with an
honest bound (the R extra copies per layer placed where they gain most, caps ignored), status
``feasible``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import placement.lp as lp
import placement.replicas as replicas
from experiments.pipeline import build_problem
from placement import SolverOptions, SolveStatus, check_layout, expected_cost, solve_placement
from placement.outcome import Termination
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from traces.model import ModelSpec

# 3 servers x 8 GPUs on a k=4 fat tree; 3 MoE layers of 24 experts, 4 redundant slots.
ROUTES = build_route_table(build_fat_tree(4, 3))
MODEL = ModelSpec("tiny", (1, 2, 3), 24, 1, 4, 64)
OPTS = SolverOptions(time_limit_s=20, mip_rel_gap=1e-6, seed=3)


def _problem():
    act = np.random.default_rng(5).dirichlet(np.full(24, 0.4), size=3) * 4
    return build_problem(ROUTES, MODEL, act, num_redundant=4)


def _jump_clock(monkeypatch, module, name: str) -> list[float]:
    """perf_counter runs normally until ``module.name`` returns, then is 1e6 s later."""
    offset = [0.0]
    real_clock = time.perf_counter
    real = getattr(module, name)

    def after(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        offset[0] = 1e6
        return out

    monkeypatch.setattr(module, name, after)
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + offset[0])
    return offset


def test_run_highs_does_not_start_after_its_deadline():
    model = lp.Model()
    model.add_cols(np.array([1.0, 2.0]), 0.0, 1.0, True)
    r = model.add_rows("one", 1.0, 1.0, 1)
    model.add_entries(np.array([r, r]), np.array([0, 1]), 1.0)
    late = lp.run_highs(model, OPTS, integer=True, deadline=time.perf_counter() - 1.0)
    assert late.x is None and late.status is SolveStatus.NO_SOLUTION
    assert late.outcome.termination is Termination.TIME_LIMIT
    ok = lp.run_highs(model, OPTS, integer=True, deadline=time.perf_counter() + 60.0)
    assert ok.status is SolveStatus.OPTIMAL and ok.x.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("late_after", ["solve_assignment", "classes_of"])
def test_limit_reached_before_the_mip_gives_the_single_copy_layout_and_a_bound(
        monkeypatch, late_after):
    problem = _problem()
    full = solve_placement(problem, "ilp-load", OPTS)  # the flow model with all the time
    assert full.status is SolveStatus.OPTIMAL and full.info["replicas_used"] > 0

    _jump_clock(monkeypatch, replicas, late_after)
    res = solve_placement(problem, "ilp-load", OPTS)
    assert res.status is SolveStatus.FEASIBLE and res.is_ok
    assert res.solver.termination is Termination.TIME_LIMIT
    assert res.info["replica_mip"] == "not run: time limit reached"
    assert "columns" not in res.info  # neither model was handed to HiGHS
    assert ("flow_model" in res.info) == (late_after == "classes_of")
    assert check_layout(problem, res.layout) == []
    assert (res.layout.expert_gpus >= 0).sum(axis=2).max() == 1  # one copy per expert
    single = res.info["single_copy_objective"]  # the optimal layout with one copy each
    assert res.objective == pytest.approx(single) and full.objective <= single + 1e-9
    # incumbent >= optimum >= bound: the bound is below what the MIP proves reachable
    assert res.solver.objective == pytest.approx(single)
    assert res.solver.dual_bound <= full.solver.objective * (1 + 1e-9)
    assert res.solver.dual_bound <= expected_cost(problem, full.layout) * (1 + 1e-9)
    assert 0 < res.gap < 1
    assert "time limit" in res.message and "bound" in res.message


def test_copies_bound_hand_computed():
    # 1 layer, 3 experts, 2 units 2 hops apart, R = 1.  a_u (share per origin unit):
    # e0 [1, 0], e1 [.5, .5], e2 [.2, .8]; one copy costs a_u @ c_u = [0, 2], [1, 1], [1.6, .4]
    # -> best single 0, 1, 0.4; with copies everywhere 0.  The one extra copy gains most on
    # e1 (1): bound 0 + 0 + 0.4 = 0.4, the exact optimum without caps (e1 on both units).
    a_u = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    c_u = np.array([[0.0, 2.0], [2.0, 0.0]])
    assert replicas._copies_bound(a_u, c_u, 1, 3, 1) == pytest.approx(0.4)
    assert replicas._copies_bound(a_u, c_u, 1, 3, 0) == pytest.approx(1.4)  # 0 + 1 + 0.4
    assert replicas._copies_bound(a_u, c_u, 1, 3, 5) == pytest.approx(0.0)  # R >= E
