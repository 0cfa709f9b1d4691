"""Cluster description: GPUs, servers, switches and full-duplex links.

The format is described in docs/reference/cluster-format.md.

A :class:`ClusterSpec` is an immutable list of nodes and links.  Every GPU belongs to exactly
one server; inside a server the GPUs hang off the server's node (its NVLink-class switch, which
is also where its NICs attach) through links of hop weight 0, as in the paper.  Network links
have hop weight 1 unless set otherwise.  ``validate_cluster`` is the one place that checks a
description; the builders and the file loader call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral, Real
from typing import TYPE_CHECKING, Literal

from traces.infra.errors import InputError

if TYPE_CHECKING:  # imported where used: the CLI's parsers and light commands import this module
    import networkx as nx
    import numpy as np

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
    nic_gpu: str = field(
        default="",
        metadata={
            "help": "On a server-to-switch link: the GPU whose own NIC it is (rail i for GPU i);"
            " empty: the server's NICs are pooled."
        },
    )


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
        import numpy as np

        index = {s: i for i, s in enumerate(self.servers)}
        by_name = {n.name: n for n in self.nodes}
        return np.array([index[by_name[g].server] for g in self.gpus], dtype=np.int64)

    @cached_property
    def gpu_nic_link(self) -> np.ndarray:
        """Index of the NIC link every GPU sends through (``LinkSpec.nic_gpu``), -1 where the
        server's NICs are pooled.  A GPU without a NIC of its own (its NIC failed) sends through
        the NIC of the next GPU of its server that has one (PXN over NVLink)."""
        import numpy as np

        index = {g: i for i, g in enumerate(self.gpus)}
        out = np.full(len(self.gpus), -1, dtype=np.int64)
        for i, lk in enumerate(self.links):
            if lk.nic_gpu:
                out[index[lk.nic_gpu]] = i
        if (out >= 0).any():
            gs = self.gpu_server
            for s in range(self.num_servers):
                members = np.flatnonzero(gs == s)
                own = out[members].copy()
                for k, g in enumerate(members):
                    if own[k] < 0:  # validate_cluster: some GPU of the server has a NIC
                        nxt = next(j for j in range(1, len(members) + 1)
                                   if own[(k + j) % len(members)] >= 0)
                        out[g] = own[(k + nxt) % len(members)]
        return out

    @property
    def has_gpu_nics(self) -> bool:
        """True when GPUs send through NICs of their own (rail-optimized fabrics)."""
        return bool((self.gpu_nic_link >= 0).all())

    @cached_property
    def graph(self) -> nx.Graph:
        """Undirected networkx graph; edge attributes are the LinkSpec fields and ``index``."""
        import networkx as nx

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
                nic_gpu=link.nic_gpu,
            )
        return g


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)  # numpy's scalars are Real too


def validate_cluster(cluster: ClusterSpec) -> None:
    """Raise :class:`InputError` naming the first element that is wrong.

    Checks, in order: node names, kinds and fields (types, duplicates); every GPU inside a
    server node; every server holding at least one GPU; links referencing known nodes, no self
    links or duplicates, bandwidth > 0, latency and weight >= 0 (all finite); every GPU linked
    to its own server and to nothing else (the server node is its NVLink switch and where its
    NICs attach: the simulator and the strategy rely on this); a link's ``nic_gpu`` naming a GPU
    of the server at one end, a switch at the other, and each GPU owning at most one NIC link;
    where any GPU owns one, every server holding a GPU that does (a GPU without one sends
    through a sibling's NIC); no switch without links; every GPU reachable from every other.
    """
    where = f"cluster {cluster.name!r}"
    names = _check_nodes(cluster, where)
    _check_servers(cluster, where)
    degree = _check_links(cluster, names, where)
    _check_wiring(cluster, names, degree, where)


def _check_nodes(cluster: ClusterSpec, where: str) -> dict[str, NodeSpec]:
    """Node names, kinds and field types; the nodes by name."""
    names: dict[str, NodeSpec] = {}
    for i, n in enumerate(cluster.nodes):
        if not isinstance(n.name, str) or not n.name:
            raise InputError(f"{where}: node #{i} needs a non-empty string name, got {n.name!r}")
        if n.name in names:
            raise InputError(f"{where}: duplicate node name {n.name!r} (node #{i})")
        if n.kind not in ("gpu", "server", "switch"):
            raise InputError(
                f"{where}: node {n.name!r} has unknown kind {n.kind!r} (use gpu, server, switch)"
            )
        if not isinstance(n.server, str) or not isinstance(n.tier, str):
            raise InputError(f"{where}: node {n.name!r}: 'server' and 'tier' must be strings")
        if not isinstance(n.group, Integral) or isinstance(n.group, bool):
            raise InputError(f"{where}: node {n.name!r}: 'group' must be an integer")
        if n.kind != "gpu" and n.server:
            raise InputError(
                f"{where}: node {n.name!r} is a {n.kind} but names server {n.server!r};"
                " only GPUs sit inside servers"
            )
        names[n.name] = n
    return names


def _check_servers(cluster: ClusterSpec, where: str) -> None:
    """Every GPU inside a known server, every server holding a GPU."""
    holds: dict[str, int] = {n.name: 0 for n in cluster.nodes if n.kind == "server"}
    for n in cluster.nodes:
        if n.kind == "gpu":
            if not n.server:
                raise InputError(
                    f"{where}: GPU {n.name!r} is not inside any server (set its 'server')"
                )
            if n.server not in holds:
                raise InputError(
                    f"{where}: GPU {n.name!r} is not inside a known server: {n.server!r} is"
                    " not a server node"
                )
            holds[n.server] += 1
    if not any(n.kind == "gpu" for n in cluster.nodes):
        raise InputError(f"{where}: has no GPUs")
    for server, count in holds.items():
        if count == 0:
            raise InputError(f"{where}: server {server!r} holds no GPUs")


def _check_links(cluster: ClusterSpec, names: dict[str, NodeSpec], where: str) -> dict[str, int]:
    """Link ends, duplicates and numbers; the links per node."""
    seen: set[tuple[str, str]] = set()
    degree: dict[str, int] = dict.fromkeys(names, 0)
    for i, link in enumerate(cluster.links):
        label = f"link #{i} ({link.a}-{link.b})"
        for end in (link.a, link.b):
            if not isinstance(end, str) or end not in names:
                raise InputError(f"{where}: {label} references unknown node {end!r}")
        if link.a == link.b:
            raise InputError(f"{where}: {label} connects a node to itself")
        key = (min(link.a, link.b), max(link.a, link.b))
        if key in seen:
            raise InputError(
                f"{where}: duplicate {label}; merge parallel links into one with their"
                " bandwidths added"
            )
        seen.add(key)
        for value, what, low in (
            (link.bandwidth_bytes_per_s, "bandwidth_bytes_per_s", "> 0"),
            (link.latency_s, "latency_s", ">= 0"),
            (link.weight, "weight", ">= 0"),
        ):
            ok = _is_number(value) and (isinstance(value, Integral) or math.isfinite(value))
            ok = ok and (value > 0 if low == "> 0" else value >= 0)
            if not ok:
                raise InputError(
                    f"{where}: {label}: {what} must be a finite number {low}, got {value!r}"
                )
        if not isinstance(link.tier, str):
            raise InputError(f"{where}: {label}: 'tier' must be a string")
        _check_nic_gpu(where, label, link, names)
        degree[link.a] += 1
        degree[link.b] += 1
    _check_nic_coverage(where, cluster)
    return degree


def _check_wiring(
    cluster: ClusterSpec, names: dict[str, NodeSpec], degree: dict[str, int], where: str
) -> None:
    """GPUs linked to their server only, no idle switch, every GPU reachable."""
    import networkx as nx

    nbrs: dict[str, list[str]] = {name: [] for name in names}
    for link in cluster.links:
        nbrs[link.a].append(link.b)
        nbrs[link.b].append(link.a)
    for n in cluster.nodes:
        if n.kind == "gpu" and nbrs[n.name] != [n.server]:
            others = sorted(set(nbrs[n.name]) - {n.server})
            problem = f"is also linked to {others}" if others else "has no link to it"
            raise InputError(
                f"{where}: GPU {n.name!r} must be linked to its server {n.server!r} and to"
                f" nothing else, but {problem} (NICs attach to the server node)"
            )
        if n.kind == "switch" and degree[n.name] == 0:
            raise InputError(f"{where}: switch {n.name!r} has no links")
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
            raise InputError(
                f"{where}: GPU {gpu!r} is unreachable: no path of links joins it to GPU"
                f" {gpus[0]!r}"
            )


def _check_nic_gpu(where: str, label: str, link: LinkSpec, names: dict[str, NodeSpec]) -> None:
    """A link's ``nic_gpu`` names a GPU of the server at one end; the other end is a switch."""
    if not isinstance(link.nic_gpu, str):
        raise InputError(f"{where}: {label}: 'nic_gpu' must be a string")
    if not link.nic_gpu:
        return
    gpu = names.get(link.nic_gpu)
    if gpu is None or gpu.kind != "gpu":
        raise InputError(f"{where}: {label}: nic_gpu {link.nic_gpu!r} is not a GPU")
    ends = {names[link.a].kind: link.a, names[link.b].kind: link.b}
    if ends.get("server") != gpu.server or "switch" not in ends:
        raise InputError(
            f"{where}: {label}: nic_gpu {link.nic_gpu!r} is a NIC of server {gpu.server!r},"
            " so the link must join that server to a switch"
        )


def _check_nic_coverage(where: str, cluster: ClusterSpec) -> None:
    """Each GPU owns at most one NIC link; where any GPU owns one, every server has a GPU that
    does (the others send through it: a failed NIC, see ``ClusterSpec.gpu_nic_link``)."""
    owners = [lk.nic_gpu for lk in cluster.links if lk.nic_gpu]
    if not owners:
        return
    seen: set[str] = set()
    for gpu in owners:
        if gpu in seen:
            raise InputError(f"{where}: GPU {gpu!r} owns more than one NIC link (nic_gpu)")
        seen.add(gpu)
    server_of = {n.name: n.server for n in cluster.nodes if n.kind == "gpu"}
    with_nic = {server_of[g] for g in seen}
    missing = [n.name for n in cluster.nodes if n.kind == "server" and n.name not in with_nic]
    if missing:
        raise InputError(
            f"{where}: server {missing[0]!r} has no GPU with a NIC link of its own while other"
            " servers do; give its GPUs their NIC links (nic_gpu) or give no GPU one"
        )
