"""The DES's work counted before it runs (simulator/des_cost.py): a hand-computed case, and the
count against the trains and hop events a real replay steps, for every dispatch scheme on
per-GPU and pooled NICs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dispatch_schemes import two_rail_cluster

from simulator import transfer
from simulator.cluster.builders import build_fat_tree, build_rail_optimized
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.des_cost import DesWork, microbatch_work
from simulator.engine import simulate
from simulator.traffic_config import DISPATCH_SCHEMES, TrafficConfig

CLUSTERS = {
    "rail": lambda: build_rail_optimized(num_servers=4, servers_per_group=2, num_spines=2),
    "fat-tree": lambda: build_fat_tree(4, 4),
}


@contextmanager
def counting_trains() -> Iterator[dict[str, int]]:
    """Count the trains the DES starts and the hops they step while inside."""
    seen = {"trains": 0, "hops": 0}
    init, step = transfer._Train.__init__, transfer._Train.step

    def counting_init(self, *a, **k):  # noqa: ANN001, ANN202
        seen["trains"] += 1
        init(self, *a, **k)

    def counting_step(self, ev):  # noqa: ANN001, ANN202
        seen["hops"] += 1
        step(self, ev)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transfer._Train, "__init__", counting_init)
        mp.setattr(transfer._Train, "step", counting_step)
        yield seen


def _counted_replay(blocks, routes, layout, traffic) -> DesWork:
    """Run the DES and count the trains it starts and the hops they step."""
    with counting_trains() as seen:
        simulate(blocks, routes, layout, SimConfig(traffic=traffic, chunk_bytes=64))
    return DesWork(seen["trains"], seen["hops"])


def test_deepep_normal_one_token_by_hand():
    routes = build_route_table(two_rail_cluster())
    # one token on g0 picks experts on g2 and g3 (server s1): one RDMA message g0 -> s1
    # (g0's NVLink uplink, then rail 0 and the rail switch to s1: 3 hops) and two NVLink
    # fan-outs (s1 -> g2, s1 -> g3: 1 hop each), one slice each (1 copy < 8 per slice):
    # 3 trains, 5 hop events a phase; the combine mirrors them: 6 trains, 10 hop events
    trace = make_trace(tiny_model(experts=2, top_k=2), np.array([[[0, 1]]]), origin=[0])
    layout = np.array([[2, 3]])
    traffic = TrafficConfig(1.0, 2.0, dispatch="deepep-normal")
    assert microbatch_work(trace, routes, layout, traffic) == DesWork(6, 10)
    assert _counted_replay([trace], routes, layout, traffic) == DesWork(6, 10)


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
@pytest.mark.parametrize("scheme", DISPATCH_SCHEMES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), copies=st.integers(1, 80),
       senders=st.sampled_from([1, 2, 0]))
def test_the_count_is_what_the_replay_steps(cluster, scheme, seed, copies, senders):
    routes = build_route_table(CLUSTERS[cluster]())
    g = routes.num_gpus
    rng = np.random.default_rng(seed)
    model = tiny_model(layers=2, experts=16, top_k=4)
    blocks = []
    senders = senders or g  # 1 or 2 sending GPUs: many copies per message, sliced by DeepEP
    for _ in range(2):  # two micro-batches
        experts = np.stack([[rng.choice(16, 4, replace=False) for _ in range(2)]
                            for _ in range(copies)])
        blocks.append(make_trace(model, experts, origin=rng.integers(0, senders, copies)))
    layout = rng.integers(0, g, (2, 16))
    traffic = TrafficConfig(dispatch=scheme)
    want = DesWork(0, 0)
    for b in blocks:
        want = want + microbatch_work(b, routes, layout, traffic)
    assert _counted_replay(blocks, routes, layout, traffic) == want
