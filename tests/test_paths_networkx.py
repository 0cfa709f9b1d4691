"""Distances, hop counts and ECMP route sets of every topology family against networkx."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from test_topology_cases import SMALL_CASES, build, case_id

from simulator.cluster.paths import (
    build_route_table,
    gpu_distance_matrix,
    server_node_distance_matrix,
)


def _walk(cluster, start, links):
    """Follow directed link ids from ``start``; return the node sequence."""
    nodes = [start]
    for dl in links:
        lk = cluster.links[dl // 2]
        src, dst = (lk.a, lk.b) if dl % 2 == 0 else (lk.b, lk.a)
        assert src == nodes[-1], "consecutive links must share a node"
        nodes.append(dst)
    return nodes


def _network(cluster):
    gpus = set(cluster.gpus)
    return cluster.graph.subgraph(n for n in cluster.graph.nodes if n not in gpus)


@pytest.fixture(params=SMALL_CASES, ids=[case_id(c) for c in SMALL_CASES], scope="module")
def case(request):
    cluster = build(request.param)
    return cluster, build_route_table(cluster)


def test_distances_equal_networkx_for_every_gpu_pair(case):
    cluster, rt = case
    want = dict(nx.all_pairs_dijkstra_path_length(cluster.graph, weight="weight"))
    gpus = cluster.gpus
    expected = np.array([[want[a][b] for b in gpus] for a in gpus])
    np.testing.assert_allclose(rt.distance, expected)
    np.testing.assert_allclose(gpu_distance_matrix(cluster), expected)
    servers = cluster.servers
    np.testing.assert_allclose(
        server_node_distance_matrix(cluster), [[want[a][b] for b in servers] for a in servers]
    )


def test_chosen_routes_are_shortest_and_fewest_links(case):
    cluster, rt = case
    g = cluster.graph
    gpus = cluster.gpus
    hops = dict(nx.all_pairs_shortest_path_length(g))
    n = len(gpus)
    for a in range(n):
        for b in range(n):
            path = rt.path(a, b)
            nodes = _walk(cluster, gpus[a], path)
            assert nodes[-1] == gpus[b]
            weight = sum(cluster.links[dl // 2].weight for dl in path)
            assert weight == pytest.approx(rt.distance[a, b])
            if a != b:
                # fewest links among the minimum-weight paths (networkx enumerates them)
                fewest = min(
                    len(p) - 1 for p in nx.all_shortest_paths(g, gpus[a], gpus[b], "weight")
                )
                assert len(path) == fewest == rt.path_lengths[a, b]
                assert len(path) >= hops[gpus[a]][gpus[b]]
    # the server-level hop count is the middle route's length
    s = cluster.num_servers
    for i in range(s):
        for j in range(s):
            assert rt.server_hops[i, j] == len(rt.middle(i, j))


def test_equal_cost_route_sets_match_networkx(case):
    cluster, rt = case
    net = _network(cluster)
    servers = cluster.servers
    for i, src in enumerate(servers):
        for j, dst in enumerate(servers):
            if i == j:
                assert rt.middle_routes(i, j) == []
                continue
            routes = rt.middle_routes(i, j)
            ours = sorted(tuple(_walk(cluster, src, r)) for r, _ in routes)
            # a set: networkx repeats paths when links of weight 0 (NIC host sides) are on them
            theirs = sorted({tuple(p) for p in nx.all_shortest_paths(net, src, dst, "weight")})
            assert ours == theirs
            assert sum(share for _, share in routes) == pytest.approx(1.0)
            # the chosen route is one of them
            chosen = tuple(_walk(cluster, src, rt.middle(i, j)))
            assert chosen in theirs
            # per-link shares are the route shares summed per link
            summed: dict[int, float] = {}
            for r, share in routes:
                for dl in r:
                    summed[int(dl)] = summed.get(int(dl), 0.0) + share
            got = rt.middle_link_shares(i, j)
            assert set(got) == set(summed)
            for dl, share in summed.items():
                assert got[dl] == pytest.approx(share)


def test_ecmp_shares_hand_computed():
    from simulator.cluster.families import BUILDERS

    # leaf-spine, 2 leaves of 1 server, 3 spines: s0 - leaf0 - {spine0,1,2} - leaf1 - s1,
    # three equal routes, the leaf splits evenly: 1/3 each
    c = BUILDERS["leaf-spine"](num_servers=2, servers_per_leaf=1, num_spines=3, gpus_per_server=1)
    rt = build_route_table(c)
    routes = rt.middle_routes(0, 1)
    assert len(routes) == 3
    assert [share for _, share in routes] == pytest.approx([1 / 3] * 3)
    assert all(len(r) == 4 for r, _ in routes)
    # full k=4 fat tree, servers in different pods: edge picks 1 of 2 aggregations, the
    # aggregation 1 of 2 cores, then the path down is fixed: 4 routes of 1/2 * 1/2 = 1/4
    c = BUILDERS["fat-tree"](k=4, gpus_per_server=1)
    rt = build_route_table(c)
    routes = rt.middle_routes(0, c.num_servers - 1)
    assert [share for _, share in routes] == pytest.approx([0.25] * 4)


def test_route_table_is_deterministic():
    case = SMALL_CASES[2]
    a, b = build_route_table(build(case)), build_route_table(build(case))
    np.testing.assert_array_equal(a.middle_links, b.middle_links)
    np.testing.assert_array_equal(a.middle_offsets, b.middle_offsets)
    np.testing.assert_array_equal(a.distance, b.distance)
