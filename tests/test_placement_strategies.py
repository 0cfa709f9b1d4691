"""Every strategy on cluster-built problems, through the one checker; baselines and EPLB."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import uneven_cluster

from placement import (
    STRATEGIES,
    SolverOptions,
    SolveStatus,
    check_layout,
    expected_cost,
    solve_placement,
)
from placement.eplb import balanced_packing, replicate
from placement.token_sample import token_sample
from tests.placement_fixtures import FAT_TREE_3 as ROUTES
from tests.placement_fixtures import cluster_problem
from traces import SynthConfig, generate_trace
from traces.infra.errors import InputError
from traces.model import ModelSpec

MODEL = ModelSpec("tiny", (1, 2, 3), 24, 1, 4, 64, num_expert_groups=3, topk_groups=2)


def _activation(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(24, 0.4), size=3) * 4


def _problem(seed: int = 0, tenants: bool = False, **kw):
    act = _activation(seed)
    if tenants:  # tokens of each server prefer their own experts: a[l, i, o] per origin GPU
        rng = np.random.default_rng(seed + 100)
        pref = rng.dirichlet(np.full(24, 0.4), size=(3, 3)) * 4  # [layer, server, expert]
        gs = ROUTES.cluster.gpu_server
        oa = np.transpose(pref[:, gs, :], (0, 2, 1)) / ROUTES.num_gpus
        kw["origin_activation"] = oa
        act = oa.sum(axis=2)
    return cluster_problem(ROUTES, act, MODEL, **kw)


# MIP variants stop at a 1e-4 relative gap (the TU models are exact regardless).
OPTS = SolverOptions(time_limit_s=20, mip_rel_gap=1e-4, seed=3)


def _sample(seed: int = 0):
    trace = generate_trace(SynthConfig(MODEL, num_tokens=300, seq_len=1, step_tokens=300,
                                       num_gpus=ROUTES.num_gpus, seed=seed))
    return token_sample([trace], ROUTES.num_gpus)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_passes_the_checker(strategy):
    problem = _problem(tenants=True, token_sample=_sample())
    res = solve_placement(problem, strategy, OPTS)
    assert res.is_ok, res.message
    assert check_layout(problem, res.layout) == []
    assert res.options == OPTS


@pytest.mark.parametrize("strategy", ["ilp-load", "ilp-bytes", "eplb", "dedup"])
def test_strategies_with_replicas_pass_the_checker(strategy):
    problem = _problem(1, num_redundant=24, slots_per_gpu=6, per_layer_per_gpu=2,
                       token_sample=_sample(1))
    res = solve_placement(problem, strategy, OPTS)
    assert res.is_ok, res.message
    assert check_layout(problem, res.layout) == []
    copies = (res.layout.expert_gpus >= 0).sum(axis=(1, 2))
    assert (copies <= 48).all() and (copies > 24).any()


def test_ilp_load_is_never_worse_than_a_baseline():
    problem = _problem(2)
    best = solve_placement(problem, "ilp-load", OPTS)
    assert best.status is SolveStatus.OPTIMAL
    for name in ("contiguous", "round-robin", "random", "greedy", "eplb", "ilp"):
        assert solve_placement(problem, name, OPTS).objective >= best.objective - 1e-9


def test_ilp_origin_is_never_worse_than_a_baseline_on_per_origin_traffic():
    problem = _problem(2, tenants=True)
    best = solve_placement(problem, "ilp-origin", OPTS)
    assert best.status is SolveStatus.OPTIMAL
    for name in ("round-robin", "greedy", "eplb", "ilp", "ilp-load"):
        layout = solve_placement(problem, name, OPTS).layout
        assert expected_cost(problem, layout) >= best.objective - 1e-9


def test_servers_of_equal_cost_are_merged():
    # Servers 0 and 1 share an edge switch and see the same distances: one class.
    res = solve_placement(_problem(), "ilp-load", OPTS)
    assert res.info["unit"] == "server"
    assert res.info["classes"] == 2


def test_random_is_seeded():
    p = _problem()
    a = solve_placement(p, "random", SolverOptions(seed=1)).layout.expert_gpus
    b = solve_placement(p, "random", SolverOptions(seed=1)).layout.expert_gpus
    c = solve_placement(p, "random", SolverOptions(seed=2)).layout.expert_gpus
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_contiguous_blocks():
    # 24 experts on 24 GPUs: expert i on GPU i in every layer.
    res = solve_placement(_problem(), "contiguous", OPTS)
    assert (res.layout.primary == np.arange(24)[None, :]).all()


def test_contiguous_blocks_when_experts_do_not_divide_over_gpus():
    # 5 experts, 3 GPUs, 3 layers: q, r = 1, 2; blocks {0,1} {2,3} {4} on GPUs 0, 1, 2 in
    # layer 0; layer 1 starts 2 GPUs on (GPUs 2, 0, 1), layer 2 4 = 1 on (GPUs 1, 2, 0).
    # Copies per GPU: 5 each = ceil(15 / 3), the slots of the problem.
    from simulator.cluster.paths import build_route_table

    routes = build_route_table(uneven_cluster((2, 1), (400.0, 400.0)))
    model = ModelSpec("five", (0, 1, 2), 5, 0, 1, 8)
    problem = cluster_problem(routes, np.full((3, 5), 0.2), model)
    res = solve_placement(problem, "contiguous", OPTS)
    assert res.is_ok
    assert res.layout.primary.tolist() == [[0, 0, 1, 1, 2], [2, 2, 0, 0, 1], [1, 1, 2, 2, 0]]


def test_greedy_puts_the_hottest_expert_on_a_cheapest_gpu():
    problem = _problem(4)
    res = solve_placement(problem, "greedy", OPTS)
    li, i = np.unravel_index(np.argmax(problem.activation), problem.activation.shape)
    cost = problem.gpu_cost()
    assert cost[res.layout.primary[li, i]] == pytest.approx(cost.min())


def test_balanced_packing_hand_computed():
    # Items 5, 4, 3, 2 into 2 packs of 2: 5 -> A, 4 -> B, 3 -> B (4 < 5), 2 -> A: loads 7 and 7.
    assert balanced_packing(np.array([5.0, 4.0, 3.0, 2.0]), 2).tolist() == [0, 1, 1, 0]


def test_replicate_hand_computed():
    # Loads 6, 2, 1 into 5 copies (2 extra): load per copy 6 > 2 > 1 -> expert 0 gets its second
    # copy (3 per copy); 3 > 2 > 1 -> expert 0 again (2 per copy): counts [3, 1, 1].
    assert replicate(np.array([6.0, 2.0, 1.0]), 5, 4).tolist() == [3, 1, 1]


def test_eplb_hierarchical_keeps_groups_on_servers():
    problem = _problem(5, num_redundant=24, slots_per_gpu=6, per_layer_per_gpu=2)
    res = solve_placement(problem, "eplb", OPTS)
    assert res.info["variant"] == "hierarchical"
    eg = res.layout.expert_gpus
    server = np.where(eg >= 0, ROUTES.cluster.gpu_server[np.maximum(eg, 0)], -1)
    for li in range(3):
        for g in range(3):  # the 8 experts of a group live on one server, copies too
            s = server[li, g * 8 : (g + 1) * 8]
            assert len(set(s[s >= 0].tolist())) == 1
    # every GPU holds exactly (24 + 24) / 24 = 2 copies per layer
    for li in range(3):
        counts = np.bincount(eg[li][eg[li] >= 0], minlength=24)
        assert (counts == 2).all()


def test_eplb_global_when_groups_do_not_divide_servers():
    model = ModelSpec("tiny2", (1, 2), 24, 1, 4, 64, num_expert_groups=4, topk_groups=2)
    problem = cluster_problem(ROUTES, _activation(6)[:2], model)
    res = solve_placement(problem, "eplb", OPTS)
    assert res.info["variant"] == "global"
    assert check_layout(problem, res.layout) == []


def test_baselines_that_ignore_balance_refuse_it():
    """An option the strategy would ignore is an error naming it, never a silent answer."""
    problem = _problem(7, balance_eps=0.01)
    with pytest.raises(InputError, match="round-robin does not support --balance-eps"):
        solve_placement(problem, "round-robin", OPTS)
