"""Clusters that are not uniform: every strategy and both simulator modes.

Servers of different sizes, NICs of different speeds (pooled or one per GPU), clusters from a
measured matrix and rack-scale racks: every strategy either returns a layout the checker
accepts or refuses with an InputError naming itself and why; the replay and the analytic
counter agree on every link.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model, uneven_cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulator_analytic import brute_force_copies

from experiments.pipeline import build_problem, origin_activation, token_sample
from placement import STRATEGIES, SolverOptions, check_layout, solve_placement
from simulator.analytic import count_traffic
from simulator.cluster.matrix import check_matrices, cluster_from_matrices
from simulator.cluster.nvl72 import build_nvl72
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.traffic_config import TrafficConfig
from traces import SynthConfig, generate_trace
from traces.infra.errors import InputError
from traces.model import ModelSpec

MODEL = ModelSpec("tiny", (1, 2), 12, 0, 2, 32, num_expert_groups=2, topk_groups=2)
OPTS = SolverOptions(time_limit_s=10, mip_rel_gap=1e-3, seed=1)


def _matrix_cluster(n: int, seed: int):
    rng = np.random.default_rng(seed)
    bw = rng.choice([2.5e10, 5e10, 2e11], size=(n, n))
    bw = np.triu(bw, 1) + np.triu(bw, 1).T
    return cluster_from_matrices(check_matrices(
        {"rank_bandwidth_bytes_per_s": bw.tolist(), "rank_server": [r // 2 for r in range(n)]},
        "test"))


@st.composite
def clusters(draw):
    kind = draw(st.sampled_from(["pooled", "per-gpu", "matrix", "nvl72"]))
    if kind == "matrix":
        return _matrix_cluster(draw(st.integers(2, 6)), draw(st.integers(0, 99)))
    if kind == "nvl72":
        return build_nvl72(num_racks=draw(st.integers(1, 3)), gpus_per_rack=4,
                           gpus_per_tray=2, scale_out=draw(st.sampled_from(
                               ["rail-optimized", "leaf-spine"])), num_spines=1)
    sizes = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4)))
    gbit = tuple(draw(st.sampled_from([100.0, 200.0, 400.0])) for _ in sizes)
    return uneven_cluster(sizes, gbit, per_gpu_nics=kind == "per-gpu")


def _problem(routes, seed: int, redundant: int = 0):
    trace = generate_trace(SynthConfig(MODEL, num_tokens=120, seq_len=1, step_tokens=120,
                                       num_gpus=routes.num_gpus, seed=seed))
    act, per_origin, _ = origin_activation([trace], routes.num_gpus)
    return build_problem(routes, MODEL, act, origin_activation=per_origin,
                         num_redundant=redundant,
                         sample=token_sample([trace], routes.num_gpus)), trace


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.integers(0, 3))
def test_every_strategy_on_a_non_uniform_cluster(cluster, seed):
    routes = build_route_table(cluster)
    problem, _ = _problem(routes, seed)
    for strategy in sorted(STRATEGIES):
        try:
            res = solve_placement(problem, strategy, OPTS)
        except InputError as exc:
            # the only refusal allowed: EPLB needs (experts + replicas) to split over GPUs
            assert strategy == "eplb" and "do not divide over" in str(exc), (strategy, exc)
            assert 12 % cluster.num_gpus
            continue
        assert res.is_ok, (strategy, res.message)
        assert check_layout(problem, res.layout) == [], strategy


@pytest.mark.parametrize("sizes", [(3, 1, 4, 2), (1, 5), (2, 2, 1, 1, 6)])
def test_eplb_on_unequal_servers_is_global_and_balanced(sizes):
    # EPLB's hierarchical step needs equal nodes; unequal servers get the global variant,
    # with (experts + replicas) / GPUs copies on every GPU (here 12 + R = 2 x GPUs)
    g = sum(sizes)
    cluster = uneven_cluster(sizes, (400.0,) * len(sizes))
    problem, _ = _problem(build_route_table(cluster), 0, redundant=2 * g - 12)
    res = solve_placement(problem, "eplb", OPTS)
    assert res.info["variant"] == "global"
    per_gpu = np.bincount(res.layout.expert_gpus[0][res.layout.expert_gpus[0] >= 0],
                          minlength=g)
    assert (per_gpu == 2).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.integers(0, 2**31), st.sampled_from(["all-to-all", "deepep-ll",
                                                           "deepep-normal"]))
def test_replay_equals_analytic_count_on_non_uniform_clusters(cluster, seed, scheme):
    rng = np.random.default_rng(seed)
    routes = build_route_table(cluster)
    g = cluster.num_gpus
    model = tiny_model(2, 6, 2, hidden=16)
    ids = np.stack([np.stack([rng.choice(6, 2, replace=False) for _ in range(2)])
                    for _ in range(30)])
    trace = make_trace(model, ids, origin=rng.integers(0, g, 30), step=rng.integers(0, 2, 30))
    layout = rng.integers(0, g, size=(2, 6, 1))
    blocks = [trace.take(trace.step == s) for s in range(2)]
    traffic = TrafficConfig(1.0, 2.0, dispatch=scheme)
    res = simulate(blocks, routes, layout, SimConfig(traffic=traffic))
    an = count_traffic(blocks, routes, layout, traffic)
    np.testing.assert_allclose(res.links["bytes"].to_numpy(), an.link_bytes, rtol=1e-9,
                               atol=2.0)
    # and both equal the token-by-token walk of the documented rules (spray shares)
    disp, comb = brute_force_copies(routes, blocks, layout, traffic)
    np.testing.assert_allclose(an.dispatch_link_bytes, np.rint(disp * 16), rtol=1e-9, atol=2.0)
    np.testing.assert_allclose(an.combine_link_bytes, np.rint(comb * 32), rtol=1e-9, atol=2.0)
