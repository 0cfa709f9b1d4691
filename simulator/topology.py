"""Cluster description: GPUs, servers, switches and full-duplex links (design.md section 3).

A :class:`ClusterSpec` is an immutable list of nodes and links.  Every GPU belongs to exactly
one server; inside a server the GPUs hang off the server's node (its NVLink-class switch, which
is also where its NICs attach) through links of hop weight 0, as in the paper.  Network links
have hop weight 1 unless set otherwise.  ``validate_cluster`` is the one place that checks a
description; the builders and the file loader call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import networkx as nx
import numpy as np

from traces.errors import InputError

NodeKind = Literal["gpu", "server", "switch"]

GBIT = 1e9 / 8  # bytes per second in one Gb/s
GBYTE = 1e9


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A GPU, a server (its NVLink switch and NICs) or a network switch."""

    name: str
    kind: NodeKind
    server: str = field(default="", metadata={"help": "For a GPU: the server that holds it."})
    tier: str = field(default="", metadata={"help": "For a switch: edge, aggregation, core..."})
    group: int = field(default=-1, metadata={"help": "Pod or Dragonfly group, -1 if none."})


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A full-duplex link; bandwidth is per direction."""

    a: str
    b: str
    bandwidth_bytes_per_s: float = field(metadata={"help": "Line rate in each direction."})
    latency_s: float = field(default=1e-6, metadata={"help": "Propagation plus switching delay."})
    weight: float = field(default=1.0, metadata={"help": "Hop weight (paper: 0 inside servers)."})
    tier: str = field(default="", metadata={"help": "nvlink, access, aggregation, core, global."})


@dataclass(frozen=True, eq=False)
class ClusterSpec:
    """Nodes and links of a cluster.  Build with a builder or :func:`load_cluster`."""

    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    description: str = ""

    def __post_init__(self) -> None:
        validate_cluster(self)

    @cached_property
    def gpus(self) -> tuple[str, ...]:
        """GPU names in index order (the order of ``nodes``)."""
        return tuple(n.name for n in self.nodes if n.kind == "gpu")

    @cached_property
    def servers(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.kind == "server")

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def num_servers(self) -> int:
        return len(self.servers)

    @cached_property
    def gpu_server(self) -> np.ndarray:
        """Server index of every GPU, shape [gpus]."""
        index = {s: i for i, s in enumerate(self.servers)}
        by_name = {n.name: n for n in self.nodes}
        return np.array([index[by_name[g].server] for g in self.gpus], dtype=np.int64)

    @cached_property
    def graph(self) -> nx.Graph:
        """Undirected networkx graph; edge attributes are the LinkSpec fields and ``index``."""
        g = nx.Graph()
        for n in self.nodes:
            g.add_node(n.name, kind=n.kind, server=n.server, tier=n.tier, group=n.group)
        for i, link in enumerate(self.links):
            g.add_edge(
                link.a,
                link.b,
                index=i,
                bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
                latency_s=link.latency_s,
                weight=link.weight,
                tier=link.tier,
            )
        return g


def validate_cluster(cluster: ClusterSpec) -> None:
    """Raise :class:`InputError` naming the first element that is wrong."""
    where = f"cluster {cluster.name!r}"
    names: dict[str, NodeSpec] = {}
    for n in cluster.nodes:
        if not n.name:
            raise InputError(f"{where}: a node has an empty name")
        if n.name in names:
            raise InputError(f"{where}: duplicate node name {n.name!r}")
        if n.kind not in ("gpu", "server", "switch"):
            raise InputError(f"{where}: node {n.name!r} has unknown kind {n.kind!r}")
        names[n.name] = n
    for n in cluster.nodes:
        if n.kind == "gpu":
            if n.server not in names or names[n.server].kind != "server":
                raise InputError(f"{where}: GPU {n.name!r} is not inside a known server")
    if not any(n.kind == "gpu" for n in cluster.nodes):
        raise InputError(f"{where}: has no GPUs")
    seen: set[tuple[str, str]] = set()
    for link in cluster.links:
        for end in (link.a, link.b):
            if end not in names:
                raise InputError(f"{where}: link {link.a}-{link.b} references unknown node {end!r}")
        if link.a == link.b:
            raise InputError(f"{where}: link {link.a}-{link.b} connects a node to itself")
        key = (min(link.a, link.b), max(link.a, link.b))
        if key in seen:
            raise InputError(f"{where}: duplicate link {link.a}-{link.b}")
        seen.add(key)
        if not (np.isfinite(link.bandwidth_bytes_per_s) and link.bandwidth_bytes_per_s > 0):
            raise InputError(f"{where}: link {link.a}-{link.b} bandwidth must be > 0")
        if not (np.isfinite(link.latency_s) and link.latency_s >= 0):
            raise InputError(f"{where}: link {link.a}-{link.b} latency must be >= 0")
        if not (np.isfinite(link.weight) and link.weight >= 0):
            raise InputError(f"{where}: link {link.a}-{link.b} weight must be >= 0")
    g = nx.Graph()
    g.add_nodes_from(names)
    g.add_edges_from((link.a, link.b) for link in cluster.links)
    gpus = [n.name for n in cluster.nodes if n.kind == "gpu"]
    for n in cluster.nodes:  # before connectivity: it names the GPU that is cut off
        if n.kind == "gpu" and not g.has_edge(n.name, n.server):
            raise InputError(f"{where}: GPU {n.name!r} has no link to its server {n.server!r}")
    reach = nx.node_connected_component(g, gpus[0])
    for gpu in gpus:
        if gpu not in reach:
            raise InputError(f"{where}: GPU {gpu!r} cannot reach GPU {gpus[0]!r}")
