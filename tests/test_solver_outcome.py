"""The solver-outcome type: every HiGHS model status mapped, the gap rule, real HiGHS runs."""

from __future__ import annotations

import math

import highspy
import numpy as np
import pytest

from placement import SolverOptions, SolverOutcome, SolveStatus, Termination
from placement.lp import Model, run_highs, termination_of
from placement.outcome import HIGHS_TERMINATION, classify, relative_gap

S, T = SolveStatus, Termination

# HiGHS model status -> (termination, meaning with a primal solution, meaning without one).
# Limits keep a layout only with a solution; "optimal" without one is the solver's error.
EXPECTED = {
    "kOptimal": (T.OPTIMAL, S.OPTIMAL, S.ERROR),
    "kInfeasible": (T.INFEASIBLE, S.INFEASIBLE, S.INFEASIBLE),
    "kUnboundedOrInfeasible": (T.INFEASIBLE, S.INFEASIBLE, S.INFEASIBLE),
    "kUnbounded": (T.UNBOUNDED, S.ERROR, S.ERROR),
    "kTimeLimit": (T.TIME_LIMIT, S.FEASIBLE, S.NO_SOLUTION),
    "kIterationLimit": (T.ITERATION_LIMIT, S.FEASIBLE, S.NO_SOLUTION),
    "kSolutionLimit": (T.SOLUTION_LIMIT, S.FEASIBLE, S.NO_SOLUTION),
    "kInterrupt": (T.INTERRUPT, S.FEASIBLE, S.NO_SOLUTION),
    "kHighsInterrupt": (T.INTERRUPT, S.FEASIBLE, S.NO_SOLUTION),
    "kObjectiveBound": (T.OBJECTIVE_LIMIT, S.FEASIBLE, S.NO_SOLUTION),
    "kObjectiveTarget": (T.OBJECTIVE_LIMIT, S.FEASIBLE, S.NO_SOLUTION),
    "kMemoryLimit": (T.MEMORY_LIMIT, S.ERROR, S.ERROR),
    "kNotset": (T.ERROR, S.ERROR, S.ERROR),
    "kLoadError": (T.ERROR, S.ERROR, S.ERROR),
    "kModelError": (T.ERROR, S.ERROR, S.ERROR),
    "kPresolveError": (T.ERROR, S.ERROR, S.ERROR),
    "kSolveError": (T.ERROR, S.ERROR, S.ERROR),
    "kPostsolveError": (T.ERROR, S.ERROR, S.ERROR),
    "kModelEmpty": (T.ERROR, S.ERROR, S.ERROR),
    "kUnknown": (T.ERROR, S.ERROR, S.ERROR),
}


def test_every_highs_model_status_is_mapped():
    members = set(highspy.HighsModelStatus.__members__)
    assert members == set(HIGHS_TERMINATION) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_highs_status_mapping(name):
    term, with_x, without_x = EXPECTED[name]
    assert termination_of(getattr(highspy.HighsModelStatus, name)) is term
    # With an incumbent of cost 10 and a bound of 9: gap (10 - 9) / 10 = 0.1.
    o = SolverOutcome.from_solver(term, name, 10.0, 9.0, has_solution=True)
    assert o.status is with_x
    if with_x is S.FEASIBLE:
        assert o.gap == pytest.approx(0.1) and o.dual_bound == 9.0
    assert SolverOutcome.from_solver(term, name, 10.0, 9.0, has_solution=False).status \
        is without_x


@pytest.mark.parametrize("term", [t for t in Termination if t.is_limit])
def test_a_limit_without_a_bound_is_feasible_no_bound(term):
    o = SolverOutcome.from_solver(term, "x", 5.0, -math.inf, has_solution=True)
    assert o.status is S.FEASIBLE_NO_BOUND and o.gap == math.inf
    # Within the gap asked for (gap (5 - 4.99) / 5 = 0.002 <= 0.01): as good as optimal.
    assert SolverOutcome.from_solver(term, "x", 5.0, 4.99, True, gap_tolerance=0.01).status \
        is S.OPTIMAL


def test_relative_gap_hand_computed():
    assert relative_gap(8.0, 6.0) == 0.25  # (8 - 6) / 8
    assert relative_gap(-4.0, -5.0) == 0.25  # (-4 - -5) / |-4|
    assert relative_gap(3.0, 3.5) == 0.0  # a bound above the incumbent: tolerance noise
    assert relative_gap(0.0, -1.0) == math.inf
    assert relative_gap(math.nan, 1.0) == math.inf
    assert classify(T.OPTIMAL, True, math.inf) is S.OPTIMAL  # termination decides


def test_from_bound_and_without_bound():
    o = SolverOutcome.from_bound(2.0, 1.5, termination=T.TIME_LIMIT)
    assert (o.status, o.termination, o.gap) == (S.FEASIBLE, T.TIME_LIMIT, 0.25)
    no = o.without_bound()
    assert no.status is S.FEASIBLE_NO_BOUND and math.isnan(no.dual_bound)
    assert no.gap == math.inf and no.termination is T.TIME_LIMIT
    scaled = o.scaled(10.0)
    assert (scaled.objective, scaled.dual_bound, scaled.gap) == (20.0, 15.0, 0.25)
    d = o.as_dict()
    assert d["status"] == "feasible" and d["termination"] == "time-limit"


def _knapsack(n: int = 40, seed: int = 1) -> Model:
    """min -value.x s.t. weight.x <= half the total weight, x binary: branch and bound."""
    rng = np.random.default_rng(seed)
    value, weight = rng.integers(10, 100, n), rng.integers(10, 100, n)
    m = Model()
    first = m.add_cols(-value.astype(float), 0.0, 1.0, integer=True)
    r = m.add_rows("weight", -np.inf, float(weight.sum() // 2), 1)
    m.add_entries(np.full(n, r), first + np.arange(n), weight.astype(float))
    return m


def test_real_highs_optimal_lp_has_its_bound():
    # min x0 + 2 x1 s.t. x0 + x1 >= 1, 0 <= x <= 1: optimum 1 at x = (1, 0).
    m = Model()
    m.add_cols(np.array([1.0, 2.0]), 0.0, 1.0)
    m.add_entries(np.zeros(2), np.arange(2), 1.0)
    m.add_rows("cover", 1.0, np.inf, 1)
    sol = run_highs(m, SolverOptions(), integer=False)
    o = sol.outcome
    assert (o.status, o.termination, o.solver_status) == (S.OPTIMAL, T.OPTIMAL, "Optimal")
    assert o.objective == pytest.approx(1.0) and o.dual_bound == pytest.approx(1.0)
    assert o.gap == 0.0


def test_real_highs_infeasible():
    m = Model()  # x0 in [0, 1] with x0 >= 2
    m.add_cols(np.array([1.0]), 0.0, 1.0, integer=True)
    m.add_rows("low", 2.0, np.inf, 1)
    m.add_entries(np.array([0]), np.array([0]), 1.0)
    o = run_highs(m, SolverOptions(), integer=True).outcome
    assert o.status is S.INFEASIBLE and o.termination is T.INFEASIBLE


def test_real_highs_mip_bound_and_gap_are_consistent():
    o = run_highs(_knapsack(), SolverOptions(mip_rel_gap=0.0), integer=True).outcome
    assert o.status is S.OPTIMAL
    assert o.dual_bound <= o.objective + 1e-9
    assert o.gap == pytest.approx(relative_gap(o.objective, o.dual_bound))


def test_real_highs_time_limit_keeps_the_reason():
    # A time limit far below one node: HiGHS stops with "Time limit reached".
    sol = run_highs(_knapsack(200), SolverOptions(time_limit_s=1e-9), integer=True)
    o = sol.outcome
    assert o.termination is T.TIME_LIMIT and "time limit" in o.solver_status.lower()
    assert o.status in (S.NO_SOLUTION, S.FEASIBLE, S.FEASIBLE_NO_BOUND)
    assert (sol.x is None) == (o.status is S.NO_SOLUTION)


def test_docstring_examples_run():
    import doctest

    import placement.outcome

    result = doctest.testmod(placement.outcome)
    assert result.attempted >= 3 and result.failed == 0
