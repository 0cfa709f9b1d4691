"""The paper's ILPs against brute force, and every strategy through the checker."""

from __future__ import annotations

import numpy as np
import pytest

from placement import (
    ExpertLayout,
    PlacementProblem,
    SolverOptions,
    SolveStatus,
    check_layout,
    expected_cost,
    solve_placement,
)
from tests.placement_fixtures import feasible_layouts
from traces.infra.errors import InputError

# Three single-GPU servers on a line: 0 -- 1 -- 2 (server 1 is central).
LINE = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])


def _problem(activation: np.ndarray, slots: int, per_layer: int, origin=None) -> PlacementProblem:
    return PlacementProblem(
        distance=LINE,
        gpu_server=np.arange(3),
        activation=activation,
        slots_per_gpu=slots,
        max_per_gpu_per_layer=per_layer,
        origin_weight=origin,
    )


def _brute_force(problem: PlacementProblem) -> float:
    return min(expected_cost(problem, layout) for layout in feasible_layouts(problem))


@pytest.mark.parametrize(
    ("slots", "per_layer"), [(2, 1), (2, 2), (3, 2), (4, 3)]
)
def test_ilp_load_matches_brute_force(slots, per_layer):
    rng = np.random.default_rng(slots * 10 + per_layer)
    act = rng.dirichlet(np.ones(3), size=2) * 2  # 2 layers x 3 experts, top-2
    origin = np.array([0.5, 0.2, 0.3])
    problem = _problem(act, slots, per_layer, origin)
    res = solve_placement(problem, "ilp-load", SolverOptions(time_limit_s=10))
    assert res.status is SolveStatus.OPTIMAL
    assert check_layout(problem, res.layout) == []
    assert res.objective == pytest.approx(_brute_force(problem))
    assert res.info["lp_integral"] is True


def test_hand_computed_optimum():
    # Uniform origins: c = 2 * mean distance = 2 * [1, 2/3, 1] = [2, 4/3, 2].
    # One layer, experts with p = [1.5, 0.3, 0.2], one expert per GPU: the hot expert goes to
    # the central GPU 1: 1.5 * 4/3 + (0.3 + 0.2) * 2 = 2 + 1 = 3.
    problem = _problem(np.array([[1.5, 0.3, 0.2]]), slots=1, per_layer=1)
    res = solve_placement(problem, "ilp-load")
    assert res.layout.primary[0, 0] == 1
    assert res.objective == pytest.approx(3.0)


def test_uniform_ilp_ties_round_robin_when_caps_are_tight():
    # with equal weights and full servers every layout costs the same
    # (docs/background/traffic-model.md, "Hops per token").
    act = np.array([[1.5, 0.3, 0.2], [0.1, 0.1, 1.8]])
    problem = _problem(act, slots=2, per_layer=1)
    uniform = _problem(np.full_like(act, 2 / 3), slots=2, per_layer=1)
    a = solve_placement(uniform, "ilp")
    b = solve_placement(uniform, "round-robin")
    assert a.objective == pytest.approx(b.objective)
    assert solve_placement(problem, "ilp-load").objective < b.objective


def test_impossible_capacity_is_an_input_error():
    with pytest.raises(InputError, match="cannot hold"):
        _problem(np.ones((2, 3)), slots=1, per_layer=1)


def test_bad_activation_is_an_input_error():
    with pytest.raises(InputError, match="negative"):
        _problem(np.array([[1.0, -1.0, 0.5]]), slots=1, per_layer=1)
    with pytest.raises(InputError, match="NaN"):
        _problem(np.array([[1.0, np.nan, 0.5]]), slots=1, per_layer=1)


def test_checker_reports_violations():
    problem = _problem(np.ones((1, 3)), slots=1, per_layer=1)
    bad = ExpertLayout.from_primary(np.array([[0, 0, 1]]), 3)
    msgs = check_layout(problem, bad)
    assert any("more than its 1 slots" in m for m in msgs)
