"""The strategy's de-duplicated count against the simulator's, and bytes against copies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ExpertLayout
from placement.dedup.evaluate import dedup_cost
from placement.token_sample import token_sample
from simulator.analytic import count_traffic
from simulator.cluster.families import BUILDERS
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.traffic import remote_copies
from simulator.traffic_config import TrafficConfig
from tests.placement_fixtures import FAT_TREE_3 as ROUTES
from tests.placement_fixtures import cluster_problem
from traces import SynthConfig, generate_trace
from traces.model import ModelSpec

MODEL = ModelSpec("tiny", (1, 2), 16, 1, 4, 32, num_expert_groups=4, topk_groups=2)


def test_remote_copies_hand_computed():
    # 2 servers of 2 GPUs (GPUs 0,1 | 2,3).  Token 0 from GPU 0 uses hosts 1, 2, 3: server 1
    # once (de-duplicated), 2 remote routes.  Token 1 from GPU 3 uses hosts 3, 2, 0: server 0
    # once, 1 remote route.  Totals: 2 copies, 3 routes.
    gs = np.array([0, 0, 1, 1])
    rc = remote_copies(np.array([0, 3]), np.array([[1, 2, 3], [3, 2, 0]]), gs)
    assert (rc.dedup, rc.routes) == (2, 3)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 2))
def test_strategy_count_equals_simulator_count(seed, replicas):
    rng = np.random.default_rng(seed)
    G = ROUTES.num_gpus
    trace = generate_trace(SynthConfig(MODEL, num_tokens=60, seq_len=3, step_tokens=60,
                                       num_gpus=G, seed=seed, zipf_exponent=0.2))
    if seed % 2:  # recorded origins, drawn at random
        import dataclasses
        trace = dataclasses.replace(trace, origin_gpu=rng.integers(0, G, 60).astype(np.int32))
    eg = np.full((2, 16, 1 + replicas), -1, dtype=np.int64)
    for li in range(2):
        for e in range(16):
            eg[li, e, : 1 + replicas] = rng.choice(G, 1 + replicas, replace=False)
    act = np.full((2, 16), 4 / 16)
    p = cluster_problem(ROUTES, act, MODEL, token_sample=token_sample([trace], G),
                        slots_per_gpu=64, per_layer_per_gpu=32)
    mine = dedup_cost(p, ExpertLayout(eg, G))
    an = count_traffic([trace], ROUTES, eg, TrafficConfig(dispatch="deepep-normal"))
    sim = simulate([trace], ROUTES, eg, SimConfig(traffic=TrafficConfig(dispatch="deepep-normal")))
    for s in (an.summary, sim.summary):
        assert s["remote_copies_per_token_layer"] == pytest.approx(mine.copies_per_token_layer)
        assert s["remote_routes_per_token_layer"] == pytest.approx(mine.routes_per_token_layer)


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("dedup", [False, True])
def test_network_bytes_are_copies_times_bytes(family, dedup):
    # A copy enters the network once per direction: dispatch bytes at the origin's server,
    # combine bytes at the host's; the links' count and the copy count must agree.
    routes = build_route_table(BUILDERS[family]())
    G = routes.num_gpus
    trace = generate_trace(SynthConfig(MODEL, num_tokens=80, seq_len=1, step_tokens=80,
                                       num_gpus=G, seed=3, zipf_exponent=0.2))
    eg = ((np.arange(2)[:, None] * 16 + np.arange(16)[None, :]) % G)[:, :, None]
    scheme = "deepep-normal" if dedup else "all-to-all"
    a = count_traffic([trace], routes, eg, TrafficConfig(dispatch=scheme))
    key = "network_bytes_dedup" if dedup else "network_bytes_no_dedup"
    assert a.network_bytes == a.summary[key]
