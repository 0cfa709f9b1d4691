"""Cluster descriptions to and from files (users describe their own clusters this way).

Two formats, chosen by the file's suffix: ``.json`` and ``.graphml``; both round trip exactly
(same nodes and links in the same order, floats bit for bit).

JSON layout::

    {"format": "moe-netsim-cluster", "version": 1, "name": ..., "description": ...,
     "nodes": [{"name": "s0", "kind": "server"}, {"name": "s0.g0", "kind": "gpu",
               "server": "s0"}, {"name": "sw", "kind": "switch", "tier": "edge"}, ...],
     "links": [{"a": "s0.g0", "b": "s0", "bandwidth_bytes_per_s": 4.5e11,
                "latency_s": 5e-7, "weight": 0, "tier": "nvlink"}, ...]}

GraphML layout: an undirected graph with graph attributes ``name`` and ``description``, node
attributes ``kind`` (required: gpu, server or switch), ``server`` (required for a GPU), ``tier``
and ``group``; edge attributes ``bandwidth_bytes_per_s`` (required), ``latency_s`` (default
1e-6), ``weight`` (default 1), ``tier`` and ``nic_gpu`` (the GPU whose own NIC the link is;
absent in older files: NICs pooled).  Node ids are the names; the links are the edges, in
file order, ``a`` = source and ``b`` = target; every edge is a full-duplex link whatever
``edgedefault`` says, so one edge per node pair.  Keys without ``attr.name`` (e.g. a drawing
program's graphics) are ignored; other unknown attribute names are rejected, so a misspelt
attribute does not silently fall back to a default.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.atomic import atomic_write_text
from traces.infra.errors import InputError
from traces.infra.file_format import FileFormat
from traces.infra.jsonfile import read_json_file, read_text_file
from traces.infra.records import build_record

CLUSTER_FORMAT = FileFormat("moe-netsim-cluster", "moe-netsim cluster description", "cluster",
                            ("name", "description", "nodes", "links"))


def cluster_to_dict(cluster: ClusterSpec) -> dict[str, Any]:
    return {
        **CLUSTER_FORMAT.header(),
        "name": cluster.name,
        "description": cluster.description,
        "nodes": [asdict(n) for n in cluster.nodes],
        "links": [_link_dict(lk) for lk in cluster.links],
    }


def _link_dict(link: LinkSpec) -> dict[str, Any]:
    """A link's fields; ``nic_gpu`` only where set, so files of pooled-NIC clusters stay as
    before."""
    d = asdict(link)
    if not d["nic_gpu"]:
        del d["nic_gpu"]
    return d


def _records(d: dict[str, Any], key: str, cls: type, where: str) -> tuple:
    items = d.get(key)
    if not isinstance(items, list):
        raise InputError(f"{where}: '{key}' must be a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"{where}: {key}[{i}] must be an object")
    return tuple(build_record(cls, item, f"{where}: {key}[{i}]") for i, item in enumerate(items))


def cluster_from_dict(d: Any, where: str = "cluster") -> ClusterSpec:
    d = CLUSTER_FORMAT.check(d, where)
    nodes = _records(d, "nodes", NodeSpec, where)
    links = _records(d, "links", LinkSpec, where)
    try:
        return ClusterSpec(
            name=str(d.get("name", "cluster")),
            nodes=nodes,
            links=links,
            description=str(d.get("description", "")),
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


_NS = "http://graphml.graphdrawing.org/xmlns"
_GRAPHML_TYPES = {str: "string", int: "int", float: "double"}
_NODE_ATTRS = {"kind": str, "server": str, "tier": str, "group": int}
_EDGE_ATTRS = {
    "bandwidth_bytes_per_s": float, "latency_s": float, "weight": float, "tier": str,
    "nic_gpu": str,
}


def cluster_to_graphml(cluster: ClusterSpec) -> str:
    """The cluster as a GraphML document (module docstring); floats written exactly."""
    root = ET.Element("graphml", xmlns=_NS)

    def key(kid: str, domain: str, name: str, typ: type) -> None:
        ET.SubElement(
            root, "key", id=kid, attrib={"for": domain, "attr.name": name,
                                         "attr.type": _GRAPHML_TYPES[typ]}
        )

    key("g_name", "graph", "name", str)
    key("g_description", "graph", "description", str)
    for name, typ in _NODE_ATTRS.items():
        key(f"n_{name}", "node", name, typ)
    for name, typ in _EDGE_ATTRS.items():
        key(f"e_{name}", "edge", name, typ)
    graph = ET.SubElement(root, "graph", id="G", edgedefault="undirected")

    def data(parent: ET.Element, kid: str, value: object) -> None:
        ET.SubElement(parent, "data", key=kid).text = (
            repr(float(value)) if isinstance(value, float) else str(value)
        )

    data(graph, "g_name", cluster.name)
    data(graph, "g_description", cluster.description)
    for n in cluster.nodes:
        el = ET.SubElement(graph, "node", id=n.name)
        for name in _NODE_ATTRS:
            data(el, f"n_{name}", getattr(n, name))
    for i, lk in enumerate(cluster.links):
        el = ET.SubElement(graph, "edge", id=f"e{i}", source=lk.a, target=lk.b)
        for name in _EDGE_ATTRS:
            data(el, f"e_{name}", getattr(lk, name))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# a GraphML <key>'s id -> (domain, attr.name, default)
_Keys = dict[str, tuple[str, str, str | None]]


def cluster_from_graphml(text: str, where: str = "cluster") -> ClusterSpec:
    """Parse a GraphML document (module docstring) into a validated :class:`ClusterSpec`."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, col = exc.position
        raise InputError(f"{where}: not valid GraphML XML (line {line}, column {col})") from None
    if _local(root.tag) != "graphml":
        raise InputError(f"{where}: root element is <{_local(root.tag)}>, expected <graphml>")
    keys, unnamed = _graphml_keys(root)
    graphs = [el for el in root if _local(el.tag) == "graph"]
    if len(graphs) != 1:
        raise InputError(f"{where}: expected one <graph> element, found {len(graphs)}")
    graph = graphs[0]

    def attrs(el: ET.Element, domain: str, known: dict[str, type], label: str) -> dict:
        return _attributes(el, domain, known, keys, unnamed, f"{where}: {label}")

    gattrs = attrs(graph, "graph", {"name": str, "description": str}, "graph")
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    for el in graph:
        tag = _local(el.tag)
        if tag == "node":
            name = el.get("id")
            if not name:
                raise InputError(f"{where}: node #{len(nodes)} has no id")
            a = attrs(el, "node", _NODE_ATTRS, f"node {name!r}")
            if "kind" not in a:
                raise InputError(f"{where}: node {name!r} has no 'kind' (gpu, server, switch)")
            nodes.append(NodeSpec(name=name, **a))  # type: ignore[arg-type]
        elif tag == "edge":
            src, dst = el.get("source", ""), el.get("target", "")
            label = f"edge #{len(links)} ({src}-{dst})"
            a = attrs(el, "edge", _EDGE_ATTRS, label)
            if "bandwidth_bytes_per_s" not in a:
                raise InputError(f"{where}: {label} has no 'bandwidth_bytes_per_s'")
            links.append(LinkSpec(a=src, b=dst, **a))  # type: ignore[arg-type]
    try:
        return ClusterSpec(
            name=str(gattrs.get("name", "cluster")),
            nodes=tuple(nodes),
            links=tuple(links),
            description=str(gattrs.get("description", "")),
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _graphml_keys(root: ET.Element) -> tuple[_Keys, set[str]]:
    """The declared attribute keys, and the ids of keys without attr.name (drawing programs'
    graphics), which are ignored."""
    keys: _Keys = {}
    unnamed: set[str] = set()
    for el in root:
        if _local(el.tag) != "key":
            continue
        name = el.get("attr.name")
        if name is None:
            unnamed.add(el.get("id", ""))
            continue
        default = next((d.text or "" for d in el if _local(d.tag) == "default"), None)
        keys[el.get("id", "")] = (el.get("for", "all"), name, default)
    return keys, unnamed


def _attributes(el: ET.Element, domain: str, known: dict[str, type], keys: _Keys,
                unnamed: set[str], where: str) -> dict[str, object]:
    """An element's <data> (and the keys' defaults) as typed attributes of ``known``."""
    out: dict[str, object] = {}
    for _kid, (dom, name, default) in keys.items():
        if dom in (domain, "all") and default is not None and name in known:
            out[name] = default
    for d in el:
        if _local(d.tag) != "data":
            continue
        kid = d.get("key", "")
        if kid in unnamed:
            continue
        if kid not in keys:
            raise InputError(f"{where}: <data key={kid!r}> has no declared <key>")
        dom, name, _ = keys[kid]
        if name not in known and domain == "graph":
            continue  # graph-level notes of other tools
        if name not in known:
            raise InputError(
                f"{where}: unknown {domain} attribute {name!r}; known: {sorted(known)}"
            )
        out[name] = d.text or ""
    typed: dict[str, object] = {}
    for name, raw in out.items():
        typ = known[name]
        try:
            typed[name] = typ(str(raw).strip()) if typ is not str else str(raw)
        except ValueError:
            raise InputError(
                f"{where}: attribute {name!r} must be {typ.__name__}, got {raw!r}"
            ) from None
    return typed


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".graphml"):
        raise InputError(f"{path}: unknown topology file type {suffix!r}; use .json or .graphml")
    return suffix


def save_cluster(cluster: ClusterSpec, path: str | os.PathLike[str]) -> None:
    """Write ``path`` (.json or .graphml) atomically."""
    p = Path(path)
    if _format(p) == ".json":
        text = json.dumps(cluster_to_dict(cluster), indent=1) + "\n"
    else:
        text = cluster_to_graphml(cluster)
    atomic_write_text(p, text)


def load_cluster(path: str | os.PathLike[str]) -> ClusterSpec:
    """Read and validate a cluster file (.json or .graphml)."""
    p = Path(path)
    if _format(p) == ".json":
        return cluster_from_dict(read_json_file(p, "topology file"), where=str(p))
    return cluster_from_graphml(read_text_file(p, "topology file"), where=str(p))


def cluster_fingerprint(cluster: ClusterSpec) -> str:
    """16 hex digits of SHA-256 over the cluster's nodes and links in order (not its name or
    description): files that describe the same fabric, JSON or GraphML, share it."""
    import hashlib

    d = cluster_to_dict(cluster)
    body = json.dumps({"nodes": d["nodes"], "links": d["links"]}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]
