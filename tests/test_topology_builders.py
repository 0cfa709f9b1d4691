"""Topology families: shapes worked out by hand, the registry's calling convention, the sparse
variants' definition, and properties over random parameters."""

from __future__ import annotations

import inspect
import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_topology_cases import SMALL_CASES, build, case_id

from simulator.cluster.builders import LinkDefaults, build_leaf_spine, build_rail_optimized
from simulator.cluster.dragonfly import build_dragonfly
from simulator.cluster.families import BUILDERS
from simulator.cluster.paths import build_route_table, gpu_distance_matrix
from traces.infra.errors import InputError


def _count(cluster, attr, value, kind=None):
    items = cluster.nodes if kind else cluster.links
    return sum(getattr(x, attr) == value and (kind is None or x.kind == kind) for x in items)


def test_fat_tree_full_k4_by_hand():
    c = BUILDERS["fat-tree"](k=4)
    # k=4: 4 pods x 2 edge x 2 hosts = 16 servers x 8 GPUs; 8 edge, 8 agg, 4 cores
    assert (c.num_servers, c.num_gpus) == (16, 128)
    # links: 128 nvlink + 16 access + 4 pods x 2 x 2 edge-agg + 8 agg x 2 core = 176
    assert len(c.links) == 176
    assert _count(c, "tier", "aggregation") == 16 and _count(c, "tier", "core") == 16
    # defaults: 8 NICs x 400 Gb/s = 8 x 5e10 = 4e11 B/s per server, switch bundles the same
    assert {lk.bandwidth_bytes_per_s for lk in c.links if lk.tier != "nvlink"} == {4e11}
    assert {lk.bandwidth_bytes_per_s for lk in c.links if lk.tier == "nvlink"} == {450e9}
    assert {lk.weight for lk in c.links if lk.tier == "nvlink"} == {0.0}


def test_dragonfly_canonical_by_hand():
    c = build_dragonfly()  # a=4, p=2, h=2: g = a*h + 1 = 9 groups
    routers = [n for n in c.nodes if n.kind == "switch"]
    assert len(routers) == 36 and c.num_servers == 9 * 4 * 2
    assert _count(c, "tier", "local") == 9 * 6  # C(4, 2) local links per group
    glob = [lk for lk in c.links if lk.tier == "global"]
    assert len(glob) == 36  # C(9, 2): each pair of groups exactly once
    group = {n.name: n.group for n in c.nodes}
    pairs = sorted(tuple(sorted((group[lk.a], group[lk.b]))) for lk in glob)
    assert pairs == list(itertools.combinations(range(9), 2))
    per_router = {r.name: 0 for r in routers}
    for lk in glob:
        per_router[lk.a] += 1
        per_router[lk.b] += 1
    assert set(per_router.values()) == {2}  # h global links on every router
    # absolute arrangement: groups 0 and 1 join port 0 of group 0 (router 0) to port 0 of
    # group 1 (router 0); groups 3 and 7: port 6 of group 3 (router 3), port 3 of group 7
    # (router 1)
    ends = {frozenset((lk.a, lk.b)) for lk in glob}
    assert frozenset(("g0.r0", "g1.r0")) in ends and frozenset(("g3.r3", "g7.r1")) in ends
    # distances: same server 0, same router 2 (server-router-server), same group 3 (one local
    # link between), other group 3..5 (global link plus 0..2 local links)
    d = gpu_distance_matrix(c)
    sg = np.array([group[c.servers[i]] for i in c.gpu_server])
    other = sg[:, None] != sg[None, :]
    assert set(np.unique(d[other])) == {3.0, 4.0, 5.0}
    assert set(np.unique(d[~other])) == {0.0, 2.0, 3.0}


def test_dragonfly_fewer_groups_share_ports_evenly():
    c = build_dragonfly(num_groups=4)  # 8 ports per group, 3 partners: 2 links per pair
    glob = [lk for lk in c.links if lk.tier == "global"]
    group = {n.name: n.group for n in c.nodes}
    pairs = [tuple(sorted((group[lk.a], group[lk.b]))) for lk in glob]
    assert sorted(set(pairs)) == list(itertools.combinations(range(4), 2))
    assert all(pairs.count(p) == 2 for p in set(pairs))
    # no router uses more than its h = 2 ports
    use: dict[str, int] = {}
    for lk in glob:
        use[lk.a] = use.get(lk.a, 0) + 1
        use[lk.b] = use.get(lk.b, 0) + 1
    assert max(use.values()) <= 2


def test_leaf_spine_oversubscription_by_hand():
    c = build_leaf_spine(num_servers=8, servers_per_leaf=4, num_spines=2, oversubscription=3.0)
    # a leaf faces 4 servers x 4e11 = 1.6e12 B/s; up: 1.6e12 / 3 over 2 spines = 2.667e11 each
    up = [lk for lk in c.links if lk.tier == "spine"]
    assert len(up) == 2 * 2
    assert all(lk.bandwidth_bytes_per_s == pytest.approx(1.6e12 / 3 / 2) for lk in up)
    assert set(np.unique(gpu_distance_matrix(c))) == {0.0, 2.0, 4.0}


def test_rail_optimized_by_hand():
    c = build_rail_optimized(
        num_servers=6, servers_per_group=4, num_spines=2, defaults=LinkDefaults(gpus_per_server=4)
    )
    rails = [n for n in c.nodes if n.tier == "rail"]
    assert len(rails) == 2 * 4  # 2 groups x 4 rails (one per GPU index)
    # every server has one 400 Gb/s NIC link to each rail switch of its group
    by = {n.name: n for n in c.nodes}
    for s in c.servers:
        nics = [lk for lk in c.links if s in (lk.a, lk.b) and lk.tier == "rail"]
        assert len(nics) == 4
        assert {lk.bandwidth_bytes_per_s for lk in nics} == {50e9}
        other = [lk.b if lk.a == s else lk.a for lk in nics]
        assert sorted(other) == [f"u{by[s].group}.rail{i}" for i in range(4)]
    # rail-spine: 4 servers x 5e10 / (1 x 2 spines) = 1e11 each, 8 rails x 2 spines
    up = [lk for lk in c.links if lk.tier == "spine"]
    assert len(up) == 16 and {lk.bandwidth_bytes_per_s for lk in up} == {1e11}
    # same group: server - rail - server (2); across groups via a spine (4)
    d = gpu_distance_matrix(c)
    gs = c.gpu_server
    same_group = np.array([by[c.servers[i]].group for i in gs])
    off = gs[:, None] != gs[None, :]
    assert set(np.unique(d[off & (same_group[:, None] == same_group[None, :])])) == {2.0}
    assert set(np.unique(d[same_group[:, None] != same_group[None, :]])) == {4.0}


@pytest.mark.parametrize(
    ("family", "dense", "tiers"),
    [("fat-tree-sparse", "fat-tree", {"aggregation"}),
     ("fat-tree-thinned", "fat-tree", {"aggregation", "core"}),
     ("dragonfly-sparse", "dragonfly", {"global"})],
)
def test_sparse_variants(family, dense, tiers):
    params = {"gpus_per_server": 1}
    full = BUILDERS[dense](**params)
    sparse = BUILDERS[family](sparsity=0.5, **params)
    full_links = {frozenset((lk.a, lk.b)) for lk in full.links}
    sparse_links = {frozenset((lk.a, lk.b)) for lk in sparse.links}
    removed = full_links - sparse_links
    assert sparse_links < full_links  # only removals, nothing new
    by_ends = {frozenset((lk.a, lk.b)): lk for lk in full.links}
    assert {by_ends[e].tier for e in removed} <= tiers
    candidates = sum(lk.tier in tiers for lk in full.links)
    assert 0 < len(removed) <= round(0.5 * candidates)
    assert str(len(removed)) in sparse.description
    # connected (validated), some pairs farther, none nearer
    d_full, d_sparse = gpu_distance_matrix(full), gpu_distance_matrix(sparse)
    assert (d_sparse >= d_full).all() and (d_sparse > d_full).any()
    # deterministic; another seed removes other links; sparsity 0 is the dense fabric
    again = BUILDERS[family](sparsity=0.5, **params)
    assert again.links == sparse.links
    other = BUILDERS[family](sparsity=0.5, seed=1, **params)
    if family != "fat-tree-sparse":  # there the seed only picks the links kept to connect
        assert {frozenset((lk.a, lk.b)) for lk in other.links} != sparse_links
    assert {frozenset((lk.a, lk.b)) for lk in BUILDERS[family](sparsity=0.0, **params).links} \
        == full_links


@pytest.mark.parametrize("k, servers", [(4, 6), (10, 32)])  # the paper study's fat trees
def test_sparse_fat_tree_lengthens_paths_at_the_study_sizes(k, servers):
    # k=4: edge switches keep floor(0.5 x 2) = 1 uplink, edge e to aggregation e; pod 0's
    # edge 1 then reaches pod 1 (edge 0, aggregation 0) only through pod 0's edge 0 or pod 1's
    # aggregation 1: server 2 -> server 4 takes 8 links instead of 6 (server-edge-agg-core-...)
    full = gpu_distance_matrix(BUILDERS["fat-tree"](k=k, num_servers=servers))
    sparse = gpu_distance_matrix(BUILDERS["fat-tree-sparse"](k=k, num_servers=servers))
    thinned = gpu_distance_matrix(BUILDERS["fat-tree-thinned"](k=k, num_servers=servers))
    assert (sparse >= full).all() and sparse.max() > full.max()
    np.testing.assert_array_equal(thinned, full)  # why the old rule was renamed
    if k == 4:
        assert sparse[2 * 8, 4 * 8] == 8.0 and full[2 * 8, 4 * 8] == 6.0


def test_sparse_never_disconnects():
    # asking for nearly everything removed stops at a spanning set of links
    c = BUILDERS["dragonfly-sparse"](sparsity=0.99, gpus_per_server=1)
    net = nx.Graph([(lk.a, lk.b) for lk in c.links])
    assert nx.is_connected(net)
    groups = nx.Graph(
        [(lk.a.split(".")[0], lk.b.split(".")[0]) for lk in c.links if lk.tier == "global"]
    )
    assert groups.number_of_edges() == 8  # a spanning tree over 9 groups: no more removable


@pytest.mark.parametrize("case", SMALL_CASES, ids=case_id)
def test_every_gpu_has_one_link_to_its_server(case):
    c = build(case)
    by = {n.name: n for n in c.nodes}
    degree = {n.name: 0 for n in c.nodes}
    for lk in c.links:
        degree[lk.a] += 1
        degree[lk.b] += 1
        if by[lk.a].kind == "gpu" or by[lk.b].kind == "gpu":
            gpu, other = (lk.a, lk.b) if by[lk.a].kind == "gpu" else (lk.b, lk.a)
            assert other == by[gpu].server and lk.weight == 0
    assert all(degree[g] == 1 for g in c.gpus)
    per_server = case[1].get("gpus_per_server") or case[1]["gpus_per_rack"]
    assert c.num_gpus == c.num_servers * per_server
    build_route_table(c)


def test_family_parameters_match_builder_signatures():
    link = {f for f in LinkDefaults.__dataclass_fields__}
    for name, fam in BUILDERS.items():
        sig = inspect.signature(fam.build)
        shape = {k: v.default for k, v in sig.parameters.items() if k != "defaults"}
        assert {p.name: p.default for p in fam.shape} == shape, name
        assert {p.name for p in fam.params} - set(shape) <= link
        assert all(p.help for p in fam.params)


def test_registry_converts_and_rejects_parameters():
    # strings (command line) and integral floats (study files) are converted
    a = BUILDERS["fat-tree"](k="4", num_servers=5.0, nic_bandwidth_bytes_per_s="25e9")
    assert a.num_servers == 5
    assert {lk.bandwidth_bytes_per_s for lk in a.links if lk.tier == "access"} == {8 * 25e9}
    for params, message in [
        ({"kk": 4}, r"unknown parameter\(s\) \['kk'\]"),
        ({"k": "four"}, "parameter k: expected int"),
        ({"k": 4.5}, "parameter k: expected an integer"),
        ({"k": True}, "parameter k"),
        ({"k": 5}, "k must be an even number"),
        ({"k": 4, "num_servers": 17}, "holds 1..16 servers"),
        ({"gpus_per_server": 0}, "parameter gpus_per_server must be >= 1, got 0"),
        ({"nvlink_bandwidth_bytes_per_s": -1}, "nvlink_bandwidth_bytes_per_s must be"),
        ({"network_latency_s": float("nan")}, "network_latency_s must be"),
    ]:
        with pytest.raises(InputError, match=message):
            BUILDERS["fat-tree"](**params)
    # a LinkDefaults object, as the plain builders take, with flat overrides on top
    b = BUILDERS["fat-tree"](k=4, num_servers=2, defaults=LinkDefaults(gpus_per_server=2),
                             nics_per_server=2)
    assert b.num_gpus == 4
    assert {lk.bandwidth_bytes_per_s for lk in b.links if lk.tier == "access"} == {2 * 50e9}
    with pytest.raises(InputError, match="unknown parameter.*nics_per_server"):
        BUILDERS["rail-optimized"](nics_per_server=4)
    with pytest.raises(InputError, match=r"parameter sparsity must be >= 0 and < 1, got 1\.0"):
        BUILDERS["fat-tree-sparse"](sparsity=1.0)
    with pytest.raises(InputError, match="1..9 groups"):
        BUILDERS["dragonfly"](num_groups=10)
    with pytest.raises(InputError, match="global_links_per_router >= 1"):
        BUILDERS["dragonfly"](global_links_per_router=0)
    with pytest.raises(InputError, match="oversubscription must be > 0"):
        BUILDERS["leaf-spine"](oversubscription=0)
    with pytest.raises(InputError, match="num_spines must be >= 1"):
        BUILDERS["rail-optimized"](num_spines=0)


@st.composite
def family_params(draw):
    family = draw(st.sampled_from(sorted(BUILDERS)))
    p: dict = {"gpus_per_server": draw(st.integers(1, 3))}
    if family == "nvl72":  # racks are the servers: gpus_per_rack, in trays
        tray = draw(st.integers(1, 3))
        return family, {"num_racks": draw(st.integers(1, 4)), "gpus_per_tray": tray,
                        "gpus_per_rack": tray * draw(st.integers(1, 3)),
                        "scale_out": draw(st.sampled_from(["rail-optimized", "leaf-spine"])),
                        "num_spines": draw(st.integers(1, 3))}
    if family.startswith("fat-tree"):
        k = draw(st.sampled_from([2, 4, 6]))
        p |= {"k": k, "num_servers": draw(st.integers(1, k**3 // 4))}
    elif family.startswith("dragonfly"):
        a, h = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        p |= {"routers_per_group": a, "servers_per_router": draw(st.integers(1, 2)),
              "global_links_per_router": h, "num_groups": draw(st.integers(1, a * h + 1))}
    else:
        p |= {"num_servers": draw(st.integers(1, 12)), "num_spines": draw(st.integers(1, 3)),
              "oversubscription": draw(st.sampled_from([1.0, 2.0, 3.0]))}
        p["servers_per_leaf" if family == "leaf-spine" else "servers_per_group"] = draw(
            st.integers(1, 5)
        )
    if family.endswith("sparse"):
        p |= {"sparsity": draw(st.floats(0.0, 0.9)), "seed": draw(st.integers(0, 5))}
    return family, p


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family_params())
def test_any_parameters_give_a_connected_deterministic_cluster(case):
    family, params = case
    c = BUILDERS[family](**params)
    per_server = params.get("gpus_per_server") or params["gpus_per_rack"]
    assert c.num_gpus == c.num_servers * per_server
    assert BUILDERS[family](**params).links == c.links
    net = nx.Graph([(lk.a, lk.b) for lk in c.links])
    net.add_nodes_from(n.name for n in c.nodes)
    assert nx.is_connected(net)
    rt = build_route_table(c)
    assert np.isfinite(rt.distance).all()


def test_r1_cluster_routes_build():
    # the R1 cluster (256 GPUs, 32 servers) of every family builds and routes (speed is
    # measured by the benchmark in docs/benchmarks.md, not asserted here)
    for family, params in [
        ("fat-tree", {"k": 10, "num_servers": 32}),
        ("dragonfly", {"num_groups": 4}),
        ("leaf-spine", {"num_servers": 32, "servers_per_leaf": 8}),
        ("rail-optimized", {"num_servers": 32, "servers_per_group": 16}),
    ]:
        c = BUILDERS[family](**params)
        assert c.num_gpus == 256
        rt = build_route_table(c)
        assert rt.distance.shape == (256, 256)


def test_docstring_examples_run():
    import doctest

    import simulator.cluster.builders
    import simulator.cluster.dragonfly

    result = doctest.testmod(simulator.cluster.builders)
    assert result.attempted >= 4 and result.failed == 0
    result = doctest.testmod(simulator.cluster.dragonfly)
    assert result.attempted >= 2 and result.failed == 0
