"""Server-level route storage and sparse counting against the dense GPU-pair algorithms.

The route table keeps server-to-server routes and GPU-to-server attachment; the counters count
route by route.  Independent references here: the former route construction (networkx
Dijkstra towards every server, then the hashed walk node by node), networkx distances, and the
former dense counter (a [gpus, gpus] pair matrix per layer, every endpoint pair's multipath
entries); results must be identical, not close.
"""

from __future__ import annotations

from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_topology_cases import SMALL_CASES, build, case_id

from simulator.analytic import count_traffic
from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_leaf_spine
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import _stable_hash, build_route_table, directed_link_id
from simulator.dispatch import dedup_keys, route_pairs, server_pairs
from simulator.traffic import pair_counts, pair_list, resolve_hosts
from simulator.traffic_config import TrafficConfig
from traces.infra import limits
from traces.infra.errors import InputError
from traces.origins import resolve_origins


def _network(cluster):
    gpus = set(cluster.gpus)
    return cluster.graph.subgraph(n for n in cluster.graph.nodes if n not in gpus)


def _reference_middles(cluster):
    """The former construction: networkx Dijkstra (weight + 1e-6 per link) from every server,
    next hops sorted by name, one hashed pick per node."""
    net = _network(cluster)
    g = cluster.graph
    node_index = {name: i for i, name in enumerate(g.nodes)}

    def cost(u, v, a):
        return float(a["weight"]) + 1e-6

    out = {}
    servers = cluster.servers
    for j, dst in enumerate(servers):
        dist = nx.single_source_dijkstra_path_length(net, dst, weight=cost)
        for i, src in enumerate(servers):
            if i == j:
                out[i, j] = []
                continue
            route, u = [], src
            while u != dst:
                cands = sorted(v for v in net.neighbors(u)
                               if abs(cost(u, v, net.edges[u, v]) + dist[v] - dist[u]) < 1e-9)
                v = cands[_stable_hash(i, j, node_index[u]) % len(cands)]
                link = g.edges[u, v]["index"]
                route.append(directed_link_id(link, cluster.links[link].a == u))
                u = v
            out[i, j] = route
    return out


@pytest.mark.parametrize("case", SMALL_CASES, ids=case_id)
def test_server_routes_equal_the_former_construction(case):
    cluster = build(case)
    rt = build_route_table(cluster)
    want = _reference_middles(cluster)
    for (i, j), route in want.items():
        assert rt.middle(i, j).tolist() == route, (i, j)


@pytest.mark.parametrize("case", SMALL_CASES, ids=case_id)
def test_server_distances_and_gpu_distance_match_networkx(case):
    cluster = build(case)
    rt = build_route_table(cluster)
    net = _network(cluster)
    for i, s in enumerate(cluster.servers):
        d = nx.single_source_dijkstra_path_length(net, s, weight="weight")
        assert rt.server_distance[i].tolist() == [d[t] for t in cluster.servers]
    g = cluster.num_gpus
    a, b = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    np.testing.assert_array_equal(rt.gpu_distance[a, b], rt.distance)
    full = dict(nx.all_pairs_dijkstra_path_length(cluster.graph, weight="weight"))
    names = cluster.gpus
    assert rt.distance.tolist() == [[full[x][y] for y in names] for x in names]
    np.testing.assert_array_equal(rt.path_length(a, b), rt.path_lengths)


def _dense_count(routes, trace, layout, traffic):
    """The former counter: a dense pair matrix per layer, every endpoint pair's entries, in
    exact rational arithmetic (every route share as a Fraction), so bytes are exact."""
    cl = routes.cluster
    mp = MultipathRoutes(routes, traffic.multipath, traffic.flows_per_pair)
    pair, _, link, share = mp.entries
    frac = np.array([Fraction(x).limit_denominator(1 << 20) for x in share.tolist()] or [],
                    dtype=object)
    ep = mp.endpoints
    n, nl, g, gs = ep.count, 2 * len(cl.links), routes.num_gpus, cl.gpu_server
    up, down = routes.gpu_uplink, routes.gpu_downlink

    def copies(m):
        out = np.zeros(nl, dtype=object)
        np.add.at(out, link, m.ravel()[pair].astype(object) * frac)
        return out

    def at(ids, w=None):
        got = np.bincount(ids, weights=w, minlength=nl)
        return np.rint(got).astype(np.int64).astype(object)

    db, cb = traffic.route_bytes(trace.model)
    o = resolve_origins(trace, g)
    hosts = resolve_hosts(trace.experts, o, layout, routes.distance)
    disp, comb, hops = np.zeros(nl, dtype=object), np.zeros(nl, dtype=object), 0.0
    for li in range(hosts.shape[1]):
        h = hosts[:, li, :]
        c = pair_counts(o, h, g)
        hops += float((c * routes.distance).sum()) * 2
        if traffic.dispatch == "deepep-normal":
            keys = dedup_keys(o, h, gs)
            tt, hh = keys.gpu
            oo = o[tt]
            local = gs[hh] == gs[oo]
            st_, ss = keys.server
            so = o[st_]
            m = np.bincount(server_pairs(so, ss, ep), minlength=n * n).reshape(n, n)
            d = at(up[oo[local]]) + at(up[so]) + copies(m) + at(down[hh])
            k = at(up[hh]) + copies(m.T) + at(down[oo[local]]) + at(down[so])
        else:
            np.fill_diagonal(c, 0)
            a, b = np.nonzero(c)
            w = c[a, b]
            r = gs[a] != gs[b]
            p = route_pairs(traffic.dispatch, a[r], b[r], gs, ep)
            # whole copies as integers: float counts times a Fraction share are floats, and
            # an exact half (42/12 bytes = 3.5) came out 3.4999... and rounded the wrong way
            m = np.bincount(p, weights=w[r], minlength=n * n).astype(np.int64).reshape(n, n)
            d = at(up, c.sum(axis=1)) + copies(m) + at(down, c.sum(axis=0))
            k = at(up, c.sum(axis=0)) + copies(m.T) + at(down, c.sum(axis=1))
        disp += d * db
        comb += k * cb
    return _half_even(disp), _half_even(comb), hops


def _half_even(exact: np.ndarray) -> np.ndarray:
    """Exact rationals to whole bytes, halves to even (``round`` of a Fraction)."""
    return np.array([round(Fraction(x)) for x in exact.tolist()], dtype=np.int64)


@st.composite
def counting_cases(draw):
    d = LinkDefaults(gpus_per_server=draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["fat-tree", "leaf-spine", "small-case"]))
    if kind == "fat-tree":
        k = draw(st.sampled_from([2, 4, 6]))
        cluster = build_fat_tree(k, draw(st.integers(1, min(k**3 // 4, 24))), d)
    elif kind == "leaf-spine":
        cluster = build_leaf_spine(draw(st.integers(1, 9)), draw(st.integers(1, 4)),
                                   draw(st.integers(1, 3)), defaults=d)
    else:
        cluster = build(draw(st.sampled_from(SMALL_CASES)))
    mode = draw(st.sampled_from(["spray", "ecmp", "hash"]))
    traffic = TrafficConfig(
        1.0, 2.0, dispatch=draw(st.sampled_from(["all-to-all", "deepep-ll", "deepep-normal"])),
        multipath=mode, flows_per_pair=draw(st.integers(1, 3)) if mode == "ecmp" else None)
    layers, experts = draw(st.integers(1, 3)), draw(st.integers(2, 8))
    top_k = draw(st.integers(1, min(3, experts)))
    tokens = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    model = tiny_model(layers, experts, top_k, hidden=draw(st.integers(1, 64)))
    ids = np.stack([np.stack([rng.choice(experts, top_k, replace=False)
                              for _ in range(layers)]) for _ in range(tokens)])
    g = cluster.num_gpus
    trace = make_trace(model, ids, origin=rng.integers(0, g, tokens))
    replicas = draw(st.integers(1, min(2, g)))
    layout = np.stack([rng.choice(g, replicas, replace=False)
                       for _ in range(layers * experts)]).reshape(layers, experts, replicas)
    return cluster, trace, layout, traffic


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counting_cases())
def test_sparse_counter_equals_the_dense_counter(case):
    cluster, trace, layout, traffic = case
    routes = build_route_table(cluster)
    got = count_traffic([trace], routes, layout, traffic)
    disp, comb, hops = _dense_count(routes, trace, layout, traffic)
    np.testing.assert_array_equal(got.dispatch_link_bytes, disp)
    np.testing.assert_array_equal(got.combine_link_bytes, comb)
    assert got.hops_per_token == hops / trace.num_tokens


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(1, 4), st.integers(0, 2**31))
def test_pair_list_is_the_dense_matrix_without_zeros(gpus, tokens, k, seed):
    rng = np.random.default_rng(seed)
    o = rng.integers(0, gpus, tokens)
    h = rng.integers(0, gpus, (tokens, k))
    dense = pair_counts(o, h, gpus)
    p = pair_list(o, h, gpus)
    a, b = np.nonzero(dense)
    assert p.src.tolist() == a.tolist() and p.dst.tolist() == b.tolist()
    assert p.count.tolist() == dense[a, b].tolist()


def test_too_large_for_memory_is_refused_before_allocation(monkeypatch):
    cluster = build_fat_tree(4, 8)  # 64 GPUs: a 64 x 64 float64 matrix is 32,768 bytes
    rt = build_route_table(cluster)
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 30_000)
    with pytest.raises(InputError, match=r"64 x 64 GPU-pair matrix\) needs at least 32\.0 KiB"):
        _ = rt.distance
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 1_000)
    with pytest.raises(InputError, match="route table of 8 servers needs at least"):
        build_route_table(cluster)


@pytest.mark.parametrize("case", SMALL_CASES + [("fat-tree", {"k": 6}),
                                   ("rail-optimized", {"num_servers": 5})], ids=case_id)
def test_link_classes_from_the_core_equal_classes_from_every_pair(case):
    from simulator.cluster.link_load_classes import link_classes

    cluster = build(case)
    routes = build_route_table(cluster)
    mp = MultipathRoutes(routes, "spray")
    bw = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
    lat = np.repeat([lk.latency_s for lk in cluster.links], 2)
    np.testing.assert_array_equal(link_classes(mp.class_entries(), bw, lat),
                                  link_classes(mp.entries, bw, lat))


def test_placement_arrays_too_large_are_refused_before_allocation(monkeypatch):
    from simulator.cluster.arrays import placement_arrays

    rt = build_route_table(build_fat_tree(4, 8))
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 50_000)
    with pytest.raises(InputError, match="placement's arrays of 64 GPUs .* needs at least"):
        placement_arrays(rt)
