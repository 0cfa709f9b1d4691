"""Every ILP variant against brute force on tiny instances, with independent cost functions."""

from __future__ import annotations

import itertools

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

# Three servers on a line s0 -- s1 -- s2; s0 holds GPUs 0 and 1, s1 GPU 2, s2 GPU 3.
# Directed network links: 0 = s0->s1, 1 = s1->s0 (1 B/s), 2 = s1->s2, 3 = s2->s1 (2 B/s).
GPU_SERVER = np.array([0, 0, 1, 2])
SERVER_HOPS = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
ROUTES = {(0, 1): [0], (1, 0): [1], (1, 2): [2], (2, 1): [3], (0, 2): [0, 2], (2, 0): [3, 1]}
BANDWIDTH = np.array([1.0, 1.0, 2.0, 2.0])


def _incidence() -> np.ndarray:
    inc = np.zeros((3, 3, 4), dtype=np.uint8)
    for (a, b), links in ROUTES.items():
        inc[a, b, links] = 1
    return inc


def _spb() -> np.ndarray:
    s = np.zeros((3, 3))
    for (a, b), links in ROUTES.items():
        s[a, b] = (1.0 / BANDWIDTH[links]).sum()
    return s[np.ix_(GPU_SERVER, GPU_SERVER)]


def _problem(seed: int, layers: int = 2, experts: int = 3, **kw) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    act = rng.dirichlet(np.ones(experts), size=layers) * 2
    base = dict(
        distance=SERVER_HOPS[np.ix_(GPU_SERVER, GPU_SERVER)],
        gpu_server=GPU_SERVER,
        activation=act,
        slots_per_gpu=2,
        max_per_gpu_per_layer=1,
        origin_weight=np.array([0.1, 0.2, 0.3, 0.4]),
        pair_seconds_per_byte=_spb(),
        dispatch_bytes=1.0,
        combine_bytes=3.0,
        server_link_incidence=_incidence(),
        link_bandwidth_bytes_per_s=BANDWIDTH,
    )
    base.update(kw)
    return PlacementProblem(**base)


def _busiest_link(problem: PlacementProblem, layout: ExpertLayout) -> float:
    """Busy seconds per token of the busiest link, by walking every (origin, expert) route."""
    busy = np.zeros(4)
    w = problem.origins
    for li in range(problem.num_layers):
        for i in range(problem.num_experts):
            host = int(GPU_SERVER[layout.primary[li, i]])
            for o in range(problem.num_gpus):
                src = int(GPU_SERVER[o])
                p = problem.activation[li, i] * w[o]
                for link in ROUTES.get((src, host), []):
                    busy[link] += p * problem.dispatch_bytes / BANDWIDTH[link]
                for link in ROUTES.get((host, src), []):
                    busy[link] += p * problem.combine_bytes / BANDWIDTH[link]
    return float(busy.max())


OPTS = SolverOptions(time_limit_s=30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ilp_load_and_bytes_match_brute_force(seed):
    problem = _problem(seed)
    layouts = list(feasible_layouts(problem))
    # The paper's ILP optimises uniform activation top_k / experts = 2/3 everywhere.
    uniform = _problem(seed, activation=np.full((2, 3), 2 / 3))
    res = solve_placement(problem, "ilp", OPTS)
    assert res.status is SolveStatus.OPTIMAL
    best_uniform = min(expected_cost(uniform, lay) for lay in layouts)
    assert expected_cost(uniform, res.layout) == pytest.approx(best_uniform)
    for strategy, metric in (("ilp-load", "hops"), ("ilp-bytes", "wire")):
        res = solve_placement(problem, strategy, OPTS)
        assert res.status is SolveStatus.OPTIMAL
        assert check_layout(problem, res.layout) == []
        best = min(expected_cost(problem, lay, metric) for lay in layouts)
        assert expected_cost(problem, res.layout, metric) == pytest.approx(best)
        assert res.solver.objective == pytest.approx(best)
        assert res.solver.dual_bound == pytest.approx(best)  # proven: the bound meets it


@pytest.mark.parametrize("seed", [3, 4])
def test_ilp_origin_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    base = _problem(seed)
    # Each origin GPU prefers different experts (tenants): a[l, i, o] = p_o[l, i] * w[o].
    per_origin = rng.dirichlet(np.ones(3), size=(2, 4)) * 2  # [layers, origins, experts]
    oa = np.transpose(per_origin, (0, 2, 1)) * base.origins[None, None, :]
    problem = _problem(seed, activation=oa.sum(axis=2), origin_activation=oa)
    res = solve_placement(problem, "ilp-origin", OPTS)
    assert res.status is SolveStatus.OPTIMAL
    best = min(expected_cost(problem, lay) for lay in feasible_layouts(problem))
    assert res.objective == pytest.approx(best)
    # ilp-load sees only the marginal activation: never better on the per-origin cost.
    assert solve_placement(problem, "ilp-load", OPTS).objective >= res.objective - 1e-9


@pytest.mark.parametrize("seed", [5, 6])
def test_ilp_bottleneck_matches_brute_force(seed):
    problem = _problem(seed)
    res = solve_placement(problem, "ilp-bottleneck", OPTS)
    assert res.status is SolveStatus.OPTIMAL
    assert check_layout(problem, res.layout) == []
    best = min(_busiest_link(problem, lay) for lay in feasible_layouts(problem))
    assert _busiest_link(problem, res.layout) == pytest.approx(best)
    assert res.solver.objective == pytest.approx(best)
    assert res.solver.dual_bound <= best * (1 + 1e-6)  # a lower bound, below the optimum


@pytest.mark.parametrize(("seed", "eps"), [(7, 0.3), (8, 0.6)])
def test_balance_constraint_matches_brute_force(seed, eps):
    problem = _problem(seed, balance_eps=eps)
    res = solve_placement(problem, "ilp-load", OPTS)
    feasible = list(feasible_layouts(problem))  # the checker enforces the balance rule
    if not feasible:
        assert res.status is SolveStatus.INFEASIBLE
        assert "balance" in res.message
        return
    assert res.status is SolveStatus.OPTIMAL
    assert check_layout(problem, res.layout) == []
    assert res.objective == pytest.approx(min(expected_cost(problem, lay) for lay in feasible))


def test_impossible_balance_is_reported_in_words():
    # One layer, one expert carries 1.6 of 2 routed tokens: no GPU can stay near the mean 0.5.
    problem = _problem(0, layers=1, activation=np.array([[1.6, 0.2, 0.2]]), balance_eps=0.1)
    res = solve_placement(problem, "ilp-load", OPTS)
    assert res.status is SolveStatus.INFEASIBLE
    assert res.layout is None
    assert "(1 + 0.1) x the mean" in res.message


def test_gpu_units_when_gpus_of_a_server_differ():
    # GPU 1 is one hop closer to s1 than GPU 0: server-level units would be inexact.
    d = SERVER_HOPS[np.ix_(GPU_SERVER, GPU_SERVER)].copy()
    d[1, 2] = d[2, 1] = 0.5
    problem = _problem(9, distance=d, pair_seconds_per_byte=None)
    res = solve_placement(problem, "ilp-load", OPTS)
    assert res.info["unit"] == "gpu"
    best = min(expected_cost(problem, x) for x in feasible_layouts(problem))
    assert res.objective == pytest.approx(best)


def _replica_layouts(problem: PlacementProblem):
    G, E = problem.num_gpus, problem.num_experts
    subsets = [s for r in range(1, G + 1) for s in itertools.combinations(range(G), r)]
    for choice in itertools.product(subsets, repeat=E):
        reps = max(len(s) for s in choice)
        eg = np.full((1, E, reps), -1, dtype=np.int64)
        for i, s in enumerate(choice):
            eg[0, i, : len(s)] = s
        layout = ExpertLayout(eg, G)
        if not check_layout(problem, layout):
            yield layout


@pytest.mark.parametrize(("seed", "redundant"), [(10, 1), (11, 2)])
def test_replicas_match_brute_force(seed, redundant):
    problem = _problem(
        seed, layers=1, num_redundant=redundant, slots_per_gpu=2, max_per_gpu_per_layer=2,
        origin_weight=np.array([0.4, 0.1, 0.1, 0.4]),
    )
    res = solve_placement(problem, "ilp-load", OPTS)
    assert res.status is SolveStatus.OPTIMAL
    assert check_layout(problem, res.layout) == []
    best = min(expected_cost(problem, lay) for lay in _replica_layouts(problem))
    assert res.objective == pytest.approx(best)
    assert res.solver.objective == pytest.approx(best)
    assert res.solver.dual_bound <= best * (1 + 1e-6)  # a lower bound, below the optimum
    single = solve_placement(_problem(seed, layers=1, slots_per_gpu=2,
                                      max_per_gpu_per_layer=2,
                                      origin_weight=np.array([0.4, 0.1, 0.1, 0.4])), "ilp-load")
    assert res.objective <= single.objective + 1e-9


def test_solver_options_are_recorded():
    opts = SolverOptions(time_limit_s=5, mip_rel_gap=1e-3, threads=1, seed=7)
    res = solve_placement(_problem(0), "ilp-bottleneck", opts)
    assert res.options == opts


def test_ilp_bottleneck_shares_one_time_limit_over_its_highs_calls(monkeypatch):
    # A fake clock that advances 4 s per HiGHS call: with a 10 s limit every call must be
    # handed what is left (10, 6, 2, then the 1 ms floor), never the full limit again.
    import time

    import placement.assignment as assignment
    import placement.bottleneck as bn
    from placement.lp import run_highs as real_run

    clock = [0.0]
    limits: list[float] = []

    def fake_run(model, options, integer, start=None, time_limit_s=None, **kw):
        limit = float(time_limit_s or options.time_limit_s)
        limits.append(limit - max(1e-3, 10.0 - clock[0]))  # given beyond what was left
        clock[0] += 4.0
        return real_run(model, options, integer, start=start, time_limit_s=time_limit_s, **kw)

    for mod in (bn, assignment):
        monkeypatch.setattr(mod, "run_highs", fake_run)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    opts = SolverOptions(time_limit_s=10.0, mip_rel_gap=0.0)
    res = solve_placement(_problem(3), "ilp-bottleneck", opts)
    assert res.layout is not None and len(limits) >= 2
    assert max(limits) <= 1e-9


def test_ilp_bottleneck_without_the_mip_reports_a_bound_below_its_layout(monkeypatch):
    # The decomposition alone (no MIP polish): 6 layers x 12 experts, 3 slots per layer per
    # GPU.  The reported objective is the busiest link walked route by route; the bound is
    # below it and below the busiest link of any other layout (here ilp-load's).
    import placement.bottleneck as bn

    monkeypatch.setattr(bn, "MIP_POLISH_MAX_COLUMNS", 0)
    problem = _problem(9, layers=6, experts=12, slots_per_gpu=18, max_per_gpu_per_layer=3)
    res = solve_placement(problem, "ilp-bottleneck", OPTS)
    assert res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    assert check_layout(problem, res.layout) == []
    assert res.solver.objective == pytest.approx(_busiest_link(problem, res.layout))
    assert res.solver.dual_bound <= res.solver.objective * (1 + 1e-9)
    other = solve_placement(problem, "ilp-load", OPTS).layout
    assert res.solver.dual_bound <= _busiest_link(problem, other) * (1 + 1e-9)
    assert "mip" not in res.info
