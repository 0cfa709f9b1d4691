"""Budgeted re-placement: within a budget of bytes moved, the full re-placement's balance first,
then traffic (one MIP); its optimum and bound against exhaustive enumeration."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from experiments.pipeline import build_problem
from placement import ExpertLayout, SolverOptions, expected_cost, solve_placement
from placement.assignment import gpu_loads
from placement.migration import (
    INTRA_SERVER_MOVE_HOPS,
    expert_weight_bytes,
    replace_with_move_cost,
)
from placement.migration_budget import BALANCE_PRICE_ROUND_TRIPS
from simulator.cluster.builders import LinkDefaults, build_fat_tree
from simulator.cluster.paths import build_route_table
from tests.test_rebalance import MODEL, _problem


@pytest.fixture(scope="module")
def routes():
    return build_route_table(build_fat_tree(4, 4))  # 32 GPUs, 4 servers


def test_move_budget_is_respected_and_the_bound_holds(routes) -> None:
    problem = _problem(routes)
    current = solve_placement(_problem(routes, seed=1), "ilp-origin").layout
    w = expert_weight_bytes(MODEL, 1)
    budget = 40 * w
    res = replace_with_move_cost(problem, SolverOptions(), "ilp-origin", current, 1e4, w, 0.0,
                                 budget_bytes=budget)
    assert res.info["moved_bytes"] <= budget and res.info["moves"] <= 40
    # the MIP's value of its layout: horizon x byte-hops x expected hops + price x excess load
    scale = 1e4 * (problem.dispatch_bytes + problem.combine_bytes) / 2
    value = scale * res.objective + res.info["balance_price"] * res.info["balance_excess"]
    assert res.solver.objective == pytest.approx(value, rel=1e-6)
    assert res.dual_bound <= res.solver.objective * (1 + 1e-9)
    # the balance goal is the busiest GPU of the strategy's own full re-placement
    full = solve_placement(problem, "ilp-origin")
    assert res.info["balance_cap"] == pytest.approx(gpu_loads(problem, full.layout).max())
    assert full.objective <= res.objective + 1e-9  # the budget can only cost traffic


def _small(seed: int, slots: int):
    """1 layer, 6 experts (top-1) on 4 GPUs of 2 servers; ``slots`` experts per GPU."""
    r = build_route_table(build_fat_tree(4, 2, LinkDefaults(gpus_per_server=2)))
    m = replace(MODEL, moe_layer_indices=(1,), num_routed_experts=6, top_k=1)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(6) * 0.7)[None, :]
    a = p[:, :, None] * rng.dirichlet(np.ones(4), size=6)[None, :, :]  # own origin mix per expert
    return build_problem(r, m, p, a, slots_per_gpu=slots, per_layer_per_gpu=slots)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("move_weight", [0.0, 0.5])
def test_budgeted_optimum_and_bound_against_enumeration(seed, move_weight) -> None:
    # every assignment of 6 experts to 4 GPUs with at most 2 per GPU (4^6 = 4096, filtered):
    # the MIP's value  scale x hops + move_weight x W x move hops + price x excess  is the
    # enumerated minimum over the layouts within the budget, and its bound is below it; without
    # a budget the same value over all layouts (the exact priced assignment when it meets the
    # balance goal: excess 0 and the least traffic + moves, else the MIP started from it)
    problem = _small(seed, slots=2)
    current = ExpertLayout.from_primary(np.array([[0, 0, 1, 2, 3, 3]]), 4)
    horizon, w = 10.0, 1000.0
    scale = horizon * (problem.dispatch_bytes + problem.combine_bytes) / 2
    cap = gpu_loads(problem, solve_placement(problem, "ilp-origin").layout).max()
    price = BALANCE_PRICE_ROUND_TRIPS * problem.round_trip("hops").max() * scale
    d = problem.distance

    def value(gpus) -> tuple[float, int]:
        lay = ExpertLayout.from_primary(np.array([gpus]), 4)
        moved = [(c, g) for c, g in zip(current.primary[0], gpus, strict=True) if c != g]
        move = sum(max(d[c, g], INTRA_SERVER_MOVE_HOPS) for c, g in moved) * w * move_weight
        excess = max(0.0, gpu_loads(problem, lay).max() - cap)
        return scale * expected_cost(problem, lay) + move + price * excess, len(moved)

    layouts = [g for g in itertools.product(range(4), repeat=6) if max(np.bincount(g)) <= 2]
    values = [value(g) for g in layouts]
    for moves in [*range(5), None]:  # None: the price alone, with the same balance goal
        budget = None if moves is None else moves * w + w / 2
        res = replace_with_move_cost(problem, SolverOptions(), "ilp-origin", current, horizon,
                                     w, move_weight, budget_bytes=budget)
        assert moves is None or res.info["moves"] <= moves
        best = min(v for v, n in values if moves is None or n <= moves)
        assert res.solver.objective == pytest.approx(value(res.layout.primary[0])[0], rel=1e-6)
        assert res.solver.objective == pytest.approx(best, rel=2e-4)  # HiGHS's MIP gap 1e-4
        assert res.dual_bound <= best * (1 + 1e-9) + 1e-9
