"""Per-link bytes of the SimPy replay equal the independent analytic count (property)."""

from __future__ import annotations

import numpy as np
from helpers import make_trace, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.analytic import count_traffic
from simulator.builders import LinkDefaults, build_fat_tree
from simulator.engine import SimConfig, simulate
from simulator.paths import build_route_table
from simulator.traffic import TrafficConfig, resolve_hosts, resolve_origins


@st.composite
def cases(draw):
    k = draw(st.sampled_from([2, 4]))
    servers = draw(st.integers(1, k**3 // 4))
    gps = draw(st.integers(1, 3))
    cluster = build_fat_tree(k, servers, LinkDefaults(gpus_per_server=gps))
    layers = draw(st.integers(1, 3))
    experts = draw(st.integers(2, 8))
    top_k = draw(st.integers(1, min(3, experts)))
    tokens = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    model = tiny_model(layers, experts, top_k, hidden=draw(st.integers(1, 64)))
    ids = np.stack(
        [
            np.stack([rng.choice(experts, top_k, replace=False) for _ in range(layers)])
            for _ in range(tokens)
        ]
    )
    g = cluster.num_gpus
    trace = make_trace(
        model, ids, origin=rng.integers(0, g, tokens), step=rng.integers(0, 3, tokens)
    )
    replicas = draw(st.integers(1, min(2, g)))
    layout = np.stack(
        [rng.choice(g, replicas, replace=False) for _ in range(layers * experts)]
    ).reshape(layers, experts, replicas)
    chunk = draw(st.sampled_from([7, 100, 1 << 20]))
    return cluster, trace, layout, chunk


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_link_bytes_equal_analytic_count(case):
    cluster, trace, layout, chunk = case
    routes = build_route_table(cluster)
    traffic = TrafficConfig(1.0, 2.0)
    blocks = [trace.take(trace.step == s) for s in range(3)]
    res = simulate(blocks, routes, layout, SimConfig(traffic=traffic, chunk_bytes=chunk))
    an = count_traffic(blocks, routes, layout, traffic)
    np.testing.assert_array_equal(res.links["bytes"].to_numpy(), an.link_bytes)
    assert res.summary["hops_per_token"] == an.hops_per_token
    # utilisation is a fraction of the run
    assert (res.links["utilisation"] <= 1 + 1e-9).all()
    # conservation: each remote route's dispatch bytes leave its origin GPU exactly once
    hidden = trace.model.hidden_size
    up = res.links[res.links["src"].isin(cluster.gpus)]
    remote = 0
    for b in blocks:
        o = resolve_origins(b, cluster.num_gpus)
        h = resolve_hosts(b.experts, o, layout, routes.distance)
        remote += int((h != o[:, None, None]).sum())
    assert int(up["bytes"].sum()) == remote * hidden * (1 + 2)
    # every phase lasts at least its bandwidth lower bound
    lb = an.lower_bound_s.set_index(["microbatch", "layer", "phase"])["lower_bound_s"]
    layers = res.layers.set_index(["microbatch", "layer"])
    for (mb, layer, phase), bound in lb.items():
        row = layers.loc[(mb, layer)]
        took = row["dispatch_done_s"] - row["start_s"] if phase == "dispatch" else row["duration_s"]
        assert took + 1e-12 >= bound
