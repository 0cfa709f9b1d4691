"""Dispatch schemes, GPU-to-NIC affinity and multipath routes: hand-computed cases, route
properties against the single-path tables, and old cluster files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.analytic import count_traffic
from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_rail_optimized
from simulator.cluster.io import cluster_from_dict, cluster_to_dict, load_cluster, save_cluster
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import build_route_table
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from simulator.config import SimConfig
from simulator.dispatch import dedup_keys
from simulator.engine import simulate
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError


def two_rail_cluster() -> ClusterSpec:
    """s0 = {g0, g1}, s1 = {g2, g3}; GPU i's NIC on rail ri; rails joined by spine sp.

    NVLink 100 B/s, 0.01 s; NICs and rail-spine links 10 B/s, 0.1 s.
    """
    nodes = (
        NodeSpec("s0", "server"), NodeSpec("g0", "gpu", server="s0"),
        NodeSpec("g1", "gpu", server="s0"), NodeSpec("s1", "server"),
        NodeSpec("g2", "gpu", server="s1"), NodeSpec("g3", "gpu", server="s1"),
        NodeSpec("r0", "switch", tier="rail"), NodeSpec("r1", "switch", tier="rail"),
        NodeSpec("sp", "switch", tier="spine"),
    )
    nv = [LinkSpec(g, s, 100.0, 0.01, 0.0, "nvlink") for g, s in
          (("g0", "s0"), ("g1", "s0"), ("g2", "s1"), ("g3", "s1"))]
    nic = [LinkSpec(s, r, 10.0, 0.1, 1.0, "rail", nic_gpu=g) for s, r, g in
           (("s0", "r0", "g0"), ("s0", "r1", "g1"), ("s1", "r0", "g2"), ("s1", "r1", "g3"))]
    spine = [LinkSpec(r, "sp", 10.0, 0.1, 1.0, "spine") for r in ("r0", "r1")]
    return ClusterSpec("two-rails", nodes, tuple(nv + nic + spine))


def _run(scheme: str):
    routes = build_route_table(two_rail_cluster())
    # one token on g0 picks experts 0 (on g2) and 1 (on g3): both on server s1
    trace = make_trace(tiny_model(experts=2, top_k=2), np.array([[[0, 1]]]), origin=[0])
    layout = np.array([[2, 3]])
    traffic = TrafficConfig(1.0, 2.0, dispatch=scheme)
    cfg = SimConfig(traffic=traffic, chunk_bytes=1_000_000, expert_time_per_route_s=0.5)
    res = simulate([trace], routes, layout, cfg)
    an = count_traffic([trace], routes, layout, traffic)
    np.testing.assert_array_equal(res.links["bytes"].to_numpy(), an.link_bytes)
    ends = zip(res.links["src"], res.links["dst"], strict=True)
    d = dict(zip(ends, an.dispatch_link_bytes.tolist(), strict=True))
    return res, {k: v for k, v in d.items() if v}


def test_deepep_normal_one_rdma_copy_to_same_local_index_then_fan_out():
    res, d = _run("deepep-normal")
    # 10 B per copy: one copy leaves g0 through its own NIC (rail 0) to the NIC of s1's GPU of
    # local index 0 (g2), then fans out over NVLink to g2 and g3
    assert d == {("g0", "s0"): 10, ("s0", "r0"): 10, ("r0", "s1"): 10, ("s1", "g2"): 10,
                 ("s1", "g3"): 10}
    # dispatch: g0->s0 10/100 + 0.01 = 0.11; s0->r0 0.11 + 1 + 0.1 = 1.21; r0->s1 2.31;
    # s1->g2, s1->g3 in parallel 2.31 + 0.1 + 0.01 = 2.42
    assert res.layers.iloc[0]["dispatch_done_s"] == pytest.approx(2.42)
    assert res.summary["dispatch"] == "deepep-normal"


def test_deepep_ll_sends_direct_from_own_nic_across_rails():
    _, d = _run("deepep-ll")
    # two copies through g0's NIC; the one for g3 crosses from rail 0 to rail 1 via the spine
    assert d == {("g0", "s0"): 20, ("s0", "r0"): 20, ("r0", "s1"): 10, ("r0", "sp"): 10,
                 ("sp", "r1"): 10, ("r1", "s1"): 10, ("s1", "g2"): 10, ("s1", "g3"): 10}


def test_all_to_all_forwards_to_the_destination_rail_pxn():
    _, d = _run("all-to-all")
    # PXN: the copy for g3 (local index 1) leaves s0 through g1's NIC on rail 1
    assert d == {("g0", "s0"): 20, ("s0", "r0"): 10, ("r0", "s1"): 10, ("s0", "r1"): 10,
                 ("r1", "s1"): 10, ("s1", "g2"): 10, ("s1", "g3"): 10}


def test_spray_splits_cross_rail_traffic_over_spines():
    c = build_rail_optimized(2, 2, 2, 1.0, LinkDefaults(gpus_per_server=2))
    mp = MultipathRoutes(build_route_table(c), "spray")
    names = [(c.links[x // 2].a, c.links[x // 2].b)[:: 1 if x % 2 == 0 else -1]
             for x in range(2 * len(c.links))]
    hops = [sorted((names[x], float(s)) for x, s in zip(ids, sh, strict=True))
            for ids, sh in mp.hops(0, 3)]
    # s0.g0 -> s1.g1: own NIC (rail 0), both spines half each, rail 1, s1.g1's NIC
    assert hops == [
        [(("s0", "u0.rail0"), 1.0)],
        [(("u0.rail0", "spine0"), 0.5), (("u0.rail0", "spine1"), 0.5)],
        [(("spine0", "u0.rail1"), 0.5), (("spine1", "u0.rail1"), 0.5)],
        [(("u0.rail1", "s1"), 1.0)],
    ]
    # same rail: one switch, no spine
    assert [ids.size for ids, _ in mp.hops(0, 2)] == [1, 1]


@settings(max_examples=25, deadline=None)
@given(k=st.sampled_from([2, 4]), data=st.data())
def test_routes_against_single_path_tables(k, data):
    """Pooled NICs: 'hash' is the single-path route of RouteTable, 'spray' its per-hop ECMP
    split; every mode's hops chain link to link and their shares sum to 1."""
    servers = data.draw(st.integers(2, k**3 // 4))
    c = build_fat_tree(k, servers, LinkDefaults(gpus_per_server=1))
    rt = build_route_table(c)
    flows = data.draw(st.integers(1, 5))
    modes = {m: MultipathRoutes(rt, m, flows if m == "ecmp" else None)
             for m in ("hash", "spray", "ecmp")}
    for i in range(c.num_servers):
        for j in range(c.num_servers):
            if i == j:
                continue
            hashed = np.concatenate([ids for ids, _ in modes["hash"].hops(i, j)])
            np.testing.assert_array_equal(hashed, rt.middle(i, j))
            spray = {int(x): float(s) for ids, sh in modes["spray"].hops(i, j)
                     for x, s in zip(ids, sh, strict=True)}
            want = rt.middle_link_shares(i, j)
            assert spray.keys() == want.keys()
            assert all(spray[x] == pytest.approx(want[x]) for x in want)
            for mp in modes.values():
                hops = mp.hops(i, j)
                for _, sh in hops:
                    assert sh.sum() == pytest.approx(1.0)
                for (a_ids, _), (b_ids, _) in zip(hops, hops[1:], strict=False):
                    heads = {_end(c, x, 1) for x in a_ids}
                    assert {_end(c, x, 0) for x in b_ids} <= heads


def _end(c: ClusterSpec, directed: int, which: int) -> str:
    lk = c.links[directed // 2]
    ends = (lk.a, lk.b) if directed % 2 == 0 else (lk.b, lk.a)
    return ends[which]


def test_dedup_rule_counts_gpus_and_servers_once():
    gs = np.array([0, 0, 1, 1])
    # token 0 on GPU 0 picks GPU 1 twice, GPU 2 and GPU 3; token 1 on GPU 3 picks itself
    keys = dedup_keys(np.array([0, 3]), np.array([[1, 1, 2, 3], [3, 3, 3, 3]]), gs)
    assert list(zip(*map(list, keys.gpu), strict=True)) == [(0, 1), (0, 2), (0, 3)]
    assert list(zip(*map(list, keys.server), strict=True)) == [(0, 1)]


def test_old_cluster_files_load_unchanged(tmp_path):
    """A file written before per-GPU NICs (no nic_gpu keys) loads as pooled NICs, and files of
    pooled clusters are written exactly as before; per-GPU NICs round trip."""
    old = cluster_to_dict(build_fat_tree(2, 2))
    assert all("nic_gpu" not in lk for lk in old["links"])
    c = cluster_from_dict(json.loads(json.dumps(old)))
    assert not c.has_gpu_nics and cluster_to_dict(c) == old
    rail = build_rail_optimized(2, 2, 1)
    for suffix in (".json", ".graphml"):
        path = tmp_path / f"rail{suffix}"
        save_cluster(rail, path)
        back = load_cluster(path)
        assert back.has_gpu_nics and back.links == rail.links


def _renamed_nics(c: ClusterSpec, rename: dict[str, str]) -> tuple[LinkSpec, ...]:
    return tuple(
        LinkSpec(lk.a, lk.b, lk.bandwidth_bytes_per_s, lk.latency_s, lk.weight, lk.tier,
                 rename.get(lk.nic_gpu, lk.nic_gpu))
        for lk in c.links
    )


def test_nic_gpu_must_name_a_gpu_of_the_server_it_leaves():
    c = two_rail_cluster()
    with pytest.raises(InputError, match="nic_gpu 'g2' is a NIC of server 's1'"):
        ClusterSpec("bad", c.nodes, _renamed_nics(c, {"g0": "g2"}))
    with pytest.raises(InputError, match="server 's1' has no GPU with a NIC link of its own"):
        ClusterSpec("partial", c.nodes, _renamed_nics(c, {"g2": "", "g3": ""}))


def test_gpu_without_its_own_nic_sends_through_the_next_gpu_of_its_server():
    # g3's NIC (link 7, s1-r1) gone: g3 falls back to g2's NIC (link 6, s1-r0); g0's and g1's
    # stay links 4 and 5; the cluster still counts as one with per-GPU NICs
    c = two_rail_cluster()
    partial = ClusterSpec("partial", c.nodes, _renamed_nics(c, {"g3": ""}))
    assert partial.gpu_nic_link.tolist() == [4, 5, 6, 6]
    assert partial.has_gpu_nics
