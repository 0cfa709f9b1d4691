"""Fat tree builder, distances and routes against networkx."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table, gpu_distance_matrix
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError


def test_fat_tree_shape():
    c = build_fat_tree(4, 16)  # full k=4: 16 servers, 4 pods, 8 edge, 8 agg, 4 cores
    kinds = [n.kind for n in c.nodes]
    assert kinds.count("server") == 16 and kinds.count("gpu") == 128
    tiers = [n.tier for n in c.nodes if n.kind == "switch"]
    assert tiers.count("edge") == 8 and tiers.count("aggregation") == 8 and tiers.count("core") == 4
    # full fat tree: every server sees the same multiset of distances
    d = gpu_distance_matrix(c)
    rows = np.sort(d, axis=1)
    assert (rows == rows[0]).all()
    assert set(np.unique(d)) == {0.0, 2.0, 4.0, 6.0}


@pytest.mark.parametrize(("k", "servers"), [(4, 5), (4, 16), (6, 20), (10, 32)])
def test_distances_and_routes_agree_with_networkx(k, servers):
    c = build_fat_tree(k, servers)
    rt = build_route_table(c)
    g = c.graph
    gpus = c.gpus
    rng = np.random.default_rng(k)
    for a, b in rng.integers(0, len(gpus), size=(60, 2)):
        want = nx.shortest_path_length(g, gpus[a], gpus[b], weight="weight")
        assert rt.distance[a, b] == pytest.approx(want)
        path = rt.path(int(a), int(b))
        # walk the directed links: consecutive, from a to b, weight equal to the distance
        node = gpus[a]
        total = 0.0
        for dl in path:
            link = c.links[dl // 2]
            src, dst = (link.a, link.b) if dl % 2 == 0 else (link.b, link.a)
            assert src == node
            node = dst
            total += link.weight
        assert node == gpus[b]
        assert total == pytest.approx(want)
        if a != b:
            fewest = min(len(p) - 1 for p in nx.all_shortest_paths(g, gpus[a], gpus[b], "weight"))
            assert len(path) == fewest


def test_bad_topologies_name_the_element():
    s = NodeSpec("s0", "server")
    g = NodeSpec("g0", "gpu", server="s0")
    with pytest.raises(InputError, match="unknown node 'x'"):
        ClusterSpec("c", (s, g), (LinkSpec("g0", "x", 1.0),))
    with pytest.raises(InputError, match="bandwidth"):
        ClusterSpec("c", (s, g), (LinkSpec("g0", "s0", 0.0),))
    with pytest.raises(InputError, match="duplicate node"):
        ClusterSpec("c", (s, g, g), (LinkSpec("g0", "s0", 1.0),))
    with pytest.raises(InputError, match="not inside a known server"):
        ClusterSpec("c", (s, NodeSpec("g0", "gpu", server="nope")), ())
    g1 = NodeSpec("g1", "gpu", server="s1")
    with pytest.raises(InputError, match="unreachable"):
        ClusterSpec(
            "c",
            (s, g, NodeSpec("s1", "server"), g1),
            (LinkSpec("g0", "s0", 1.0), LinkSpec("g1", "s1", 1.0)),
        )
    with pytest.raises(InputError, match="k must be"):
        build_fat_tree(3, 2)
    with pytest.raises(InputError, match="holds"):
        build_fat_tree(4, 17)
