"""Cluster files: exact JSON and GraphML round trips, and bad descriptions named clearly."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_topology_cases import SMALL_CASES, build, case_id

from simulator.cluster.builders import LinkDefaults, build_fat_tree
from simulator.cluster.io import (
    cluster_from_graphml,
    cluster_to_dict,
    cluster_to_graphml,
    load_cluster,
    save_cluster,
)
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
@pytest.mark.parametrize("case", SMALL_CASES, ids=case_id)
def test_round_trip_is_exact(tmp_path, case, suffix):
    c = build(case)
    path = tmp_path / f"c{suffix}"
    save_cluster(c, path)
    back = load_cluster(path)
    assert (back.name, back.description, back.nodes, back.links) == (
        c.name, c.description, c.nodes, c.links
    )
    save_cluster(back, tmp_path / f"again{suffix}")
    assert (tmp_path / f"again{suffix}").read_text() == path.read_text()


@settings(max_examples=25, deadline=None)
@given(
    st.floats(1e-3, 1e15, allow_nan=False), st.floats(0, 1e-2), st.floats(0, 10),
    st.text(min_size=1, max_size=8).filter(lambda s: s.isprintable() and s.strip() == s),
)
def test_graphml_keeps_floats_and_names_bit_for_bit(bw, lat, weight, name):
    # arbitrary floats and printable names (XML-escaped) survive
    nodes = (NodeSpec("s0", "server"), NodeSpec(name + "!g", "gpu", server="s0", group=7),
             NodeSpec("s1", "server"), NodeSpec("g1", "gpu", server="s1"),
             NodeSpec(name, "switch", tier="t<&>"))
    links = (LinkSpec(name + "!g", "s0", bw, lat, weight, "nvlink"),
             LinkSpec("g1", "s1", bw, lat, 0.0),
             LinkSpec("s0", name, bw, lat, weight), LinkSpec(name, "s1", bw, lat, weight))
    c = ClusterSpec("x & y", nodes, links, "d\"esc")
    back = cluster_from_graphml(cluster_to_graphml(c))
    assert (back.name, back.description, back.nodes, back.links) == (
        c.name, c.description, c.nodes, c.links
    )


def test_networkx_reads_our_graphml_as_the_same_graph(tmp_path):
    # independent check of the GraphML we write: networkx's reader sees the same graph
    c = build_fat_tree(4, 5, LinkDefaults(gpus_per_server=2))
    save_cluster(c, tmp_path / "c.graphml")
    g = nx.read_graphml(tmp_path / "c.graphml")
    assert list(g.nodes) == [n.name for n in c.nodes]
    assert g.nodes["s0.g1"] == {"kind": "gpu", "server": "s0", "tier": "", "group": 0}
    for lk in c.links:
        e = g.edges[lk.a, lk.b]
        assert (e["bandwidth_bytes_per_s"], e["latency_s"], e["weight"], e["tier"]) == (
            lk.bandwidth_bytes_per_s, lk.latency_s, lk.weight, lk.tier
        )
    assert g.number_of_edges() == len(c.links)


def test_graphml_from_another_tool_with_defaults_and_graphics():
    # keys with defaults, a yEd-style graphics key (no attr.name), edges without latency
    text = """<?xml version="1.0"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="d0" for="node" attr.name="kind" attr.type="string"><default>gpu</default></key>
  <key id="d1" for="node" attr.name="server" attr.type="string"/>
  <key id="d2" for="edge" attr.name="bandwidth_bytes_per_s" attr.type="double">
    <default>1e9</default></key>
  <key id="d3" for="node" yfiles.type="nodegraphics"/>
  <graph edgedefault="undirected">
    <node id="srv"><data key="d0">server</data><data key="d3"><shape/></data></node>
    <node id="sw"><data key="d0">switch</data></node>
    <node id="g"><data key="d1">srv</data></node>
    <node id="srv2"><data key="d0">server</data></node>
    <node id="g2"><data key="d1">srv2</data></node>
    <edge source="g" target="srv"/><edge source="g2" target="srv2"/>
    <edge source="srv" target="sw"/><edge source="sw" target="srv2"><data key="d2">5</data></edge>
  </graph>
</graphml>"""
    c = cluster_from_graphml(text)
    assert c.gpus == ("g", "g2") and c.servers == ("srv", "srv2")
    assert [lk.bandwidth_bytes_per_s for lk in c.links] == [1e9, 1e9, 1e9, 5.0]
    assert {lk.latency_s for lk in c.links} == {1e-6} and {lk.weight for lk in c.links} == {1.0}


def _tiny() -> dict:
    return cluster_to_dict(build_fat_tree(2, 2, LinkDefaults(gpus_per_server=1)))


def _write(tmp_path, d: dict, suffix: str):
    path = tmp_path / f"bad{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(d))
    else:
        nodes = tuple(NodeSpec(**n) for n in d["nodes"])
        links = tuple(LinkSpec(**lk) for lk in d["links"])
        # write without validating, as a user's file would be
        c = object.__new__(ClusterSpec)
        object.__setattr__(c, "name", d["name"])
        object.__setattr__(c, "description", "")
        object.__setattr__(c, "nodes", nodes)
        object.__setattr__(c, "links", links)
        path.write_text(cluster_to_graphml(c))
    return path


def _node(d, name):
    return next(n for n in d["nodes"] if n["name"] == name)


def _link(d, a, b):
    return next(lk for lk in d["links"] if {lk["a"], lk["b"]} == {a, b})


def _drop(d, a, b):
    d["links"].remove(_link(d, a, b))


# each: how to break the tiny k=2 fat tree (links in order: #0 p0.edge0-p0.agg0, #1 s0.g0-s0,
# #2 s0-p0.edge0, #3..#5 the same for pod 1, #6, #7 aggregation-core0), and what the message
# must name
BAD = {
    "unknown node": (lambda d: d["links"].append(dict(_link(d, "s0", "p0.edge0"), b="ghost")),
                     r"references unknown node 'ghost'"),
    "gpu outside any server": (lambda d: _node(d, "s1.g0").update(server=""),
                               r"GPU 's1.g0' is not inside any server"),
    "gpu in unknown server": (lambda d: _node(d, "s1.g0").update(server="s9"),
                              r"GPU 's1.g0' is not inside a known server: 's9'"),
    "gpu in a switch": (lambda d: _node(d, "s1.g0").update(server="p0.edge0"),
                        r"'p0.edge0' is not a server node"),
    "duplicate name": (lambda d: d["nodes"].append(dict(_node(d, "p0.agg0"))),
                       r"duplicate node name 'p0.agg0'"),
    "zero bandwidth": (lambda d: _link(d, "p0.edge0", "p0.agg0").update(bandwidth_bytes_per_s=0),
                       r"link #0 \(p0.edge0-p0.agg0\): bandwidth_bytes_per_s must be a finite"
                       r" number > 0, got 0"),
    "negative bandwidth": (lambda d: _link(d, "s0.g0", "s0").update(bandwidth_bytes_per_s=-5.0),
                           r"link #1 \(s0.g0-s0\): bandwidth_bytes_per_s .* got -5.0"),
    "negative latency": (lambda d: _link(d, "s0.g0", "s0").update(latency_s=-1.0),
                         r"link #1 \(s0.g0-s0\): latency_s must be"),
    "unreachable gpu": (lambda d: _drop(d, "s1", "p1.edge0"), r"GPU 's1.g0' is unreachable"),
    "gpu without link": (lambda d: _drop(d, "s0.g0", "s0"), r"GPU 's0.g0' .* has no link to it"),
    "gpu linked to a switch": (
        lambda d: d["links"].append(dict(_link(d, "s0", "p0.edge0"), a="s0.g0")),
        r"GPU 's0.g0' must be linked to its server 's0' and to nothing else, but is also"
        r" linked to \['p0.edge0'\]"),
    "server without gpus": (lambda d: d["nodes"].append({"name": "s7", "kind": "server"}),
                            r"server 's7' holds no GPUs"),
    "lonely switch": (lambda d: d["nodes"].append({"name": "x", "kind": "switch"}),
                      r"switch 'x' has no links"),
    "duplicate link": (lambda d: d["links"].append(dict(_link(d, "p0.edge0", "p0.agg0"))),
                       r"duplicate link #8 \(p0.edge0-p0.agg0\)"),
    "self link": (lambda d: d["links"].append(dict(_link(d, "p0.edge0", "p0.agg0"),
                                                   b="p0.edge0")),
                  r"link #8 \(p0.edge0-p0.edge0\) connects a node to itself"),
    "unknown kind": (lambda d: _node(d, "p0.agg0").update(kind="router"),
                     r"node 'p0.agg0' has unknown kind 'router'"),
}


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_files_name_the_file_and_the_element(tmp_path, what, suffix):
    d = _tiny()
    breaker, message = BAD[what]
    breaker(d)
    path = _write(tmp_path, d, suffix)
    with pytest.raises(InputError, match=message) as e:
        load_cluster(path)
    assert str(path) in str(e.value)


def test_bad_json_structure(tmp_path):
    p = tmp_path / "c.json"
    for text, message in [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a moe-netsim cluster"),
        ('{"format": "moe-netsim-cluster", "version": 2}', "unsupported cluster format version"),
    ]:
        p.write_text(text)
        with pytest.raises(InputError, match=message):
            load_cluster(p)
    d = _tiny()
    d["links"][0]["bandwidth"] = 1
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"links\[0\]\.bandwidth: unknown key"):
        load_cluster(p)
    d = _tiny()
    d["links"][0]["bandwidth_bytes_per_s"] = "fast"
    p.write_text(json.dumps(d))
    number = r"bandwidth_bytes_per_s.*(must be|expected) a (finite )?number"
    with pytest.raises(InputError, match=number):
        load_cluster(p)


def test_bad_graphml_structure(tmp_path):
    good = cluster_to_graphml(build_fat_tree(2, 2, LinkDefaults(gpus_per_server=1)))
    cases = [
        ("<graphml", r"not valid GraphML XML \(line 1"),
        ("<gml/>", r"root element is <gml>"),
        (good.replace('attr.name="latency_s"', 'attr.name="latency"'),
         r"edge #0 \(p0.edge0-p0.agg0\): unknown edge attribute 'latency'"),
        (good.replace("<data key=\"e_weight\">0.0</data>", "<data key=\"e_weight\">zero</data>",
                      1), r"edge #1 \(s0.g0-s0\): attribute 'weight' must be float"),
        (good.replace('<data key="n_kind">switch</data>', "", 1),
         r"node 'p0.agg0' has no 'kind'"),
        (good.replace('<data key="e_bandwidth_bytes_per_s">', '<data key="zz">', 1),
         r"edge #0 .*<data key='zz'> has no declared <key>"),
    ]
    for i, (text, message) in enumerate(cases):
        p = tmp_path / f"c{i}.graphml"
        p.write_text(text)
        with pytest.raises(InputError, match=message):
            load_cluster(p)
    with pytest.raises(InputError, match=r"unknown topology file type '.yaml'"):
        load_cluster(tmp_path / "c.yaml")
    with pytest.raises(InputError, match="topology file not found"):
        load_cluster(tmp_path / "missing.graphml")


_JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.text(max_size=4), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                             st.integers(),
                                                                             max_size=1),
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["nodes", "links"]), st.integers(0, 8), st.text(max_size=25),
       _JSON_VALUES, st.booleans())
def test_any_corrupted_json_field_is_an_input_error(tmp_path_factory, section, index, key,
                                                    value, known_key):
    # a random field of a random node or link set to a random JSON value: the loader either
    # accepts it or raises InputError, never another exception
    d = _tiny()
    items = d[section]
    item = items[index % len(items)]
    if known_key:
        key = sorted(item)[len(key) % len(item)]
    item[key] = value
    path = tmp_path_factory.mktemp("fuzz") / "c.json"
    path.write_text(json.dumps(d))
    try:
        load_cluster(path)
    except InputError:
        pass


def test_a_directory_is_an_input_error(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(InputError, match="cannot read"):
        load_cluster(tmp_path / "d.json")
