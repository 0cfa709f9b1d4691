"""What-ifs (simulator.cluster.failures): hand-computed byte shifts, networkx connectivity,
identity, names, and the command `topology whatif`."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import example, given, settings
from hypothesis import strategies as st

from experiments.cli import main
from simulator.analytic import count_traffic
from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_leaf_spine
from simulator.cluster.failures import (
    Element,
    WhatIf,
    apply_whatif,
    gpu_index_map,
    link_name,
    parse_whatif,
    single_failures,
)
from simulator.cluster.io import cluster_to_dict, load_cluster, save_cluster
from simulator.cluster.paths import build_route_table
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError

ONE_GPU = LinkDefaults(gpus_per_server=1)


def _bytes_by_name(cluster, link_bytes):
    out = {}
    for i, lk in enumerate(cluster.links):
        out[(lk.a, lk.b)] = int(link_bytes[2 * i])
        out[(lk.b, lk.a)] = int(link_bytes[2 * i + 1])
    return out


def _replay(cluster, host_gpu):
    # one token on GPU 0 routed to one expert on ``host_gpu``; hidden 4: a copy carries 4 bytes
    # out (dispatch, 1 byte per element) and 8 bytes back (combine, 2 bytes per element)
    trace = make_trace(tiny_model(experts=1, hidden=4), np.array([[[0]]]), origin=[0])
    routes = build_route_table(cluster)
    res = count_traffic([trace], routes, np.array([[host_gpu]]), TrafficConfig())
    return _bytes_by_name(cluster, res.link_bytes)


def test_failed_uplink_moves_its_share_to_the_other_aggregation_switch():
    # k=4 fat tree, 3 servers of one GPU: s0, s1 on p0.edge0, s2 on p0.edge1; edges link to
    # p0.agg0 and p0.agg1.  s0 -> s2 is edge0 -> {agg0, agg1} -> edge1, sprayed 1/2 each:
    # dispatch 4 B puts 2 B on edge0->agg0 and 2 B on edge0->agg1, combine 8 B puts 4 B on
    # agg0->edge0 and 4 B on agg1->edge0.  With edge0~agg0 failed all of it takes agg1:
    # edge0->agg1 carries 4 B, agg1->edge0 8 B, and nothing else changes on the access links.
    healthy = build_fat_tree(4, 3, ONE_GPU)
    before = _replay(healthy, 2)
    assert before[("p0.edge0", "p0.agg0")] == 2 and before[("p0.edge0", "p0.agg1")] == 2
    assert before[("p0.agg0", "p0.edge0")] == 4 and before[("p0.agg1", "p0.edge0")] == 4
    failed = apply_whatif(healthy, parse_whatif(["link:p0.agg0~p0.edge0"])).cluster
    after = _replay(failed, 2)
    assert ("p0.edge0", "p0.agg0") not in after
    assert after[("p0.edge0", "p0.agg1")] == 4 and after[("p0.agg1", "p0.edge0")] == 8
    assert after[("p0.agg1", "p0.edge1")] == 4 and after[("p0.edge1", "p0.agg1")] == 8
    for access in (("s0", "p0.edge0"), ("p0.edge1", "s2")):
        assert after[access] == before[access] == 4


def test_degraded_link_keeps_its_share_of_bandwidth_and_its_routes():
    healthy = build_fat_tree(4, 3, ONE_GPU)
    name = "link:p0.edge0~p0.agg0"
    out = apply_whatif(healthy, parse_whatif(degrade=[f"{name}=0.25"])).cluster
    i = next(i for i, lk in enumerate(healthy.links) if link_name(lk) == name[5:])
    assert out.links[i].bandwidth_bytes_per_s == healthy.links[i].bandwidth_bytes_per_s * 0.25
    assert [lk.a for lk in out.links] == [lk.a for lk in healthy.links]
    assert _replay(out, 2) == _replay(healthy, 2)  # spray splits by paths, not bandwidth


def test_failed_server_removes_its_gpus_and_keeps_the_other_names_in_order():
    healthy = build_fat_tree(4, 4)  # 4 servers of 8 GPUs
    res = apply_whatif(healthy, parse_whatif(["server:s1"]))
    assert res.removed_gpus == tuple(f"s1.g{i}" for i in range(8))
    assert res.cluster.gpus == tuple(g for g in healthy.gpus if not g.startswith("s1."))
    index = gpu_index_map(healthy, res.cluster)
    assert index.tolist() == [*range(8), *[-1] * 8, *range(8, 24)]


def test_failed_switch_drops_switches_left_without_links():
    # two pods: core c links to agg c // 2 of each pod; failing p0.agg0 and p1.agg0 leaves
    # core0 and core1 without links (removed, with a note each)
    healthy = build_fat_tree(4, 5, ONE_GPU)
    res = apply_whatif(healthy, parse_whatif(["switch:p0.agg0", "switch:p1.agg0"]))
    names = {n.name for n in res.cluster.nodes}
    assert {"core0", "core1"}.isdisjoint(names) and {"core2", "core3"} <= names
    assert res.notes == ("switch core0 has no links left and is removed too",
                         "switch core1 has no links left and is removed too")


@given(empty=st.sampled_from(["fat", "leaf"]))
@settings(max_examples=4, deadline=None)
def test_an_empty_whatif_is_the_identity(empty):
    healthy = build_fat_tree(4, 3) if empty == "fat" else build_leaf_spine(6, 2)
    out = apply_whatif(healthy, parse_whatif([], [])).cluster
    assert cluster_to_dict(out) == cluster_to_dict(healthy)


@given(seed=st.integers(0, 2**16), count=st.integers(1, 3))
@example(seed=934, count=3)  # leaves p1.agg1 and core2 joined to each other, to no GPU
@settings(max_examples=25, deadline=None)
def test_refused_exactly_when_networkx_finds_gpus_cut_off(seed, count):
    # an independent check: remove the same nodes and links with networkx and ask it
    healthy = build_fat_tree(4, 6, ONE_GPU)
    rng = np.random.default_rng(seed)
    pool = single_failures(healthy, "link") + single_failures(healthy, "switch")
    picked = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
    g = healthy.graph.copy()
    for e in picked:
        if e.kind == "link":
            a, b = e.name.split("~")
            if g.has_edge(a, b):
                g.remove_edge(a, b)
        elif e.name in g:
            g.remove_node(e.name)
    gpus = g.subgraph(n for n in g if n in set(healthy.gpus) or True)
    comps = [c & set(healthy.gpus) for c in nx.connected_components(gpus)]
    split = sum(1 for c in comps if c) > 1
    try:
        out = apply_whatif(healthy, WhatIf(tuple(picked)))
    except InputError as exc:
        if "named twice" in str(exc) or "goes with the failed" in str(exc):
            return  # a link of a failed switch named as well: refused before connectivity
        assert split, exc
        assert "disconnects" in str(exc)
        return
    assert not split
    assert nx.is_connected(out.cluster.graph.subgraph(
        n for n in out.cluster.graph if out.cluster.graph.degree(n) > 0))


def test_leaf_spine_server_link_failure_names_the_gpus_cut_off():
    healthy = build_leaf_spine(4, 2)
    with pytest.raises(InputError, match=r"disconnects 8 GPU\(s\).*s2.g0, s2.g1"):
        apply_whatif(healthy, parse_whatif(["link:s2~leaf1"]))


@pytest.mark.parametrize(("fail", "degrade", "message"), [
    (["link:s0~leaf9"], [], "has no node named 'leaf9'; near matches: s0~leaf0"),
    (["switch:spin0"], [], "has no switch named 'spin0'; near matches: spine0"),
    (["switch:s0"], [], "'s0' is a server, not a switch; use server:s0"),
    (["server:s0.g0"], [], "'s0.g0' is a gpu, not a server (fail its server"),
    (["link:s0~s1"], [], "has no link joins 's0' and 's1'; links of 's0': s0~leaf0"),
    (["router:r0"], [], "expected KIND:NAME with KIND one of link, switch, server"),
    (["link:s0"], [], "a link is named by its two ends"),
    ([], ["link:s0~leaf0=0"], "factor must be > 0 and <= 1, got 0.0"),
    ([], ["link:s0~leaf0=1.5"], "factor must be > 0 and <= 1, got 1.5"),
    ([], ["link:s0~leaf0=x"], "FACTOR must be a number"),
    (["link:s0~leaf0"], ["link:leaf0~s0=0.5"], "both failed and degraded"),
    (["server:s0", "server:s0"], [], "server:s0 is named twice"),
    (["server:s0", "link:s0~leaf0"], [], "goes with the failed server 's0'"),
    (["server:s0", "server:s1", "server:s2", "server:s3"], [], "leaves cluster"),
])
def test_bad_whatifs_are_one_line_errors(fail, degrade, message):
    with pytest.raises(InputError, match=__import__("re").escape(message)):
        apply_whatif(build_leaf_spine(4, 2), parse_whatif(fail, degrade))


def test_single_failures_lists_network_links_switches_and_servers():
    c = build_leaf_spine(4, 2)  # 4 servers on 2 leaves, spines
    links = single_failures(c, "link")
    assert all("g" not in e.name.split("~")[0] for e in links)
    assert len(links) == len(c.links) - c.num_gpus
    assert single_failures(c, "server") == [Element("server", s) for s in c.servers]


def test_whatif_command_writes_the_file_and_never_its_input(tmp_path, capsys):
    src = tmp_path / "c.json"
    save_cluster(build_leaf_spine(4, 2), src)
    out = tmp_path / "w.json"
    assert main(["topology", "whatif", str(src), "--fail", "server:s3",
                 "--degrade", "link:leaf0~spine0=0.5", "--out", str(out)]) == 0
    got = load_cluster(out)
    assert got.num_gpus == 24 and "what-if: fail server:s3" in got.description
    assert "8 GPUs removed" in capsys.readouterr().out
    before = src.read_bytes()
    assert main(["topology", "whatif", str(src), "--out", str(src), "--overwrite"]) == 2
    assert src.read_bytes() == before and "is the input" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    assert main(["topology", "whatif", str(src), "--fail", "server:s9", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "server:s9" in err and not bad.exists()
    assert main(["topology", "info", str(src), "--elements"]) == 0
    listing = capsys.readouterr().out
    assert "link:s0~leaf0" in listing and "switch:spine0" in listing
    assert json.loads(out.read_text())["name"].endswith("-whatif")
