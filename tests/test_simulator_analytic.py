"""Per-link bytes of the SimPy replay equal the independent analytic count (property).

Three counts must agree on random traces, layouts (with replicas) and fabrics (fat trees with
pooled NICs, rail-optimized with per-GPU NICs), for every dispatch scheme and multipath mode:
the event replay, the vectorised analytic counter and a brute-force walk over every token's
copies (endpoints chosen by the documented rules, each route's links weighted by its split).
"""

from __future__ import annotations

import numpy as np
from helpers import make_trace, tiny_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator.analytic import count_traffic, link_route_counts
from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_rail_optimized
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.traffic import pair_counts, resolve_hosts
from simulator.traffic_config import TrafficConfig
from traces.origins import resolve_origins


@st.composite
def cases(draw):
    gps = draw(st.integers(1, 3))
    d = LinkDefaults(gpus_per_server=gps)
    if draw(st.booleans()):
        k = draw(st.sampled_from([2, 4]))
        cluster = build_fat_tree(k, draw(st.integers(1, k**3 // 4)), d)
    else:
        cluster = build_rail_optimized(
            draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), 1.0, d
        )
    schemes = ["all-to-all", "deepep-ll", "deepep-normal"]  # every scheme on both NIC kinds
    mode = draw(st.sampled_from(["spray", "ecmp", "hash"]))
    traffic = TrafficConfig(
        1.0, 2.0, dispatch=draw(st.sampled_from(schemes)), multipath=mode,
        flows_per_pair=draw(st.integers(1, 3)) if mode == "ecmp" else None,
    )
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
    return cluster, trace, layout, chunk, traffic


def brute_force_copies(routes, blocks, layout, traffic) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch and combine copies per directed link, token by token in plain Python."""
    cluster = routes.cluster
    n = 2 * len(cluster.links)
    gs = [int(x) for x in cluster.gpu_server]
    members = [[a for a in range(len(gs)) if gs[a] == s] for s in range(cluster.num_servers)]
    local = [members[gs[a]].index(a) for a in range(len(gs))]
    mp = MultipathRoutes(routes, traffic.multipath, traffic.flows_per_pair)
    per_gpu = cluster.has_gpu_nics

    def nic(server: int, index: int) -> int:  # endpoint of GPU `index` of a server
        return members[server][index % len(members[server])] if per_gpu else server

    disp = np.zeros(n)
    comb = np.zeros(n)

    def network(e: int, f: int) -> None:
        for ids, shares in mp.hops(e, f):
            for x, sh in zip(ids, shares, strict=True):
                disp[x] += sh
        for ids, shares in mp.hops(f, e):
            for x, sh in zip(ids, shares, strict=True):
                comb[x] += sh

    def ends(a: int, x: int) -> None:
        disp[routes.gpu_uplink[a]] += 1
        comb[routes.gpu_downlink[a]] += 1
        disp[routes.gpu_downlink[x]] += 1
        comb[routes.gpu_uplink[x]] += 1

    for b in blocks:
        o = resolve_origins(b, routes.num_gpus)
        h = resolve_hosts(b.experts, o, layout, routes.distance)
        for t in range(b.num_tokens):
            a = int(o[t])
            for li in range(h.shape[1]):
                hosts = [int(x) for x in h[t, li] if x != a]
                if traffic.dispatch != "deepep-normal":
                    for x in hosts:
                        ends(a, x)
                        if gs[x] != gs[a]:
                            src = nic(gs[a], local[a] if traffic.dispatch == "deepep-ll"
                                      else local[x])
                            network(src, nic(gs[x], local[x]))
                    continue
                for x in sorted(set(hosts)):  # one copy per host GPU on its downlink
                    disp[routes.gpu_downlink[x]] += 1
                    comb[routes.gpu_uplink[x]] += 1
                    if gs[x] == gs[a]:  # local: one copy per GPU through a's own link
                        disp[routes.gpu_uplink[a]] += 1
                        comb[routes.gpu_downlink[a]] += 1
                for s in sorted({gs[x] for x in hosts} - {gs[a]}):
                    disp[routes.gpu_uplink[a]] += 1  # one copy per remote server
                    comb[routes.gpu_downlink[a]] += 1
                    network(nic(gs[a], local[a]), nic(s, local[a]))
    return disp, comb


def _same(got: np.ndarray, want: np.ndarray, split: bool) -> None:
    if split:  # fractional shares of copies, rounded to whole bytes at the end
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=2.0)
    else:
        np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_link_bytes_equal_analytic_count(case):
    cluster, trace, layout, chunk, traffic = case
    routes = build_route_table(cluster)
    blocks = [trace.take(trace.step == s) for s in range(3)]
    res = simulate(blocks, routes, layout, SimConfig(traffic=traffic, chunk_bytes=chunk))
    an = count_traffic(blocks, routes, layout, traffic)
    split = traffic.multipath != "hash"
    _same(res.links["bytes"].to_numpy(), an.link_bytes, split)
    assert res.summary["hops_per_token"] == an.hops_per_token
    hidden = trace.model.hidden_size
    disp, comb = brute_force_copies(routes, blocks, layout, traffic)
    _same(an.dispatch_link_bytes, np.rint(disp * hidden), split)
    _same(an.combine_link_bytes, np.rint(comb * hidden * 2), split)
    # utilisation is a fraction of the run, overall and in every window
    assert (res.links["utilisation"] <= 1 + 1e-9).all()
    assert (res.utilisation["utilisation"] <= 1 + 1e-9).all()
    per_link = res.utilisation.groupby("link_dir")["busy_s"].sum().to_numpy()
    np.testing.assert_allclose(per_link, res.links["busy_s"].to_numpy(), rtol=1e-9, atol=1e-12)
    up = res.links["src"].isin(cluster.gpus)
    down = res.links["dst"].isin(cluster.gpus)
    if traffic.dispatch != "deepep-normal":  # (de-dup fans one copy out to several GPUs)
        # conservation: every byte that leaves a GPU arrives at a GPU
        assert res.links.loc[up, "bytes"].sum() == res.links.loc[down, "bytes"].sum()
        # and each remote route's bytes leave its origin GPU exactly once
        remote = 0
        for b in blocks:
            o = resolve_origins(b, cluster.num_gpus)
            h = resolve_hosts(b.experts, o, layout, routes.distance)
            remote += int((h != o[:, None, None]).sum())
        assert int(res.links.loc[up, "bytes"].sum()) == remote * hidden * (1 + 2)
    # every phase lasts at least its bandwidth lower bound
    lb = an.lower_bound_s.set_index(["microbatch", "layer", "phase"])["lower_bound_s"]
    phases = res.phases.set_index(["microbatch", "layer", "phase"])["duration_s"]
    for key, bound in lb.items():
        assert phases.loc[key] * (1 + 1e-9) + 1e-12 >= bound


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_analytic_equals_whole_path_expansion(case):
    """With pooled NICs and per-pair hashing, one copy per route equals routes expanded over
    whole GPU-to-GPU paths (``RouteTable.path``)."""
    cluster, trace, layout, _, _ = case
    assume(not cluster.has_gpu_nics)
    routes = build_route_table(cluster)
    an = count_traffic([trace], routes, layout, TrafficConfig(1.0, 1.0, multipath="hash"))
    o = resolve_origins(trace, routes.num_gpus)
    h = resolve_hosts(trace.experts, o, layout, routes.distance)
    want = np.zeros_like(an.dispatch_link_bytes)
    for li in range(h.shape[1]):
        c = pair_counts(o, h[:, li, :], routes.num_gpus)
        np.fill_diagonal(c, 0)
        want += link_route_counts(routes, c)
    np.testing.assert_array_equal(an.dispatch_link_bytes, want * trace.model.hidden_size)
