"""Topology builders: pure functions returning a validated :class:`ClusterSpec`.

Families (``BUILDERS[name](**params)``, also ``moe-netsim topology build NAME --param k=v``):

* ``fat-tree``: k-ary fat tree (k pods of k/2 edge and k/2 aggregation switches, (k/2)^2 cores).
* ``fat-tree-sparse``: the same, each edge switch keeping a window of its aggregation uplinks
  (tapered: some shortest paths get longer).
* ``fat-tree-thinned``: the same with a fraction of its switch-to-switch links removed.
* ``dragonfly``, ``dragonfly-sparse``: groups of fully connected routers joined by global links
  (:mod:`simulator.cluster.dragonfly`, built with this module's :class:`FabricBuilder`).
* ``leaf-spine``: two tiers, every leaf linked to every spine, with an oversubscription ratio.
* ``rail-optimized``: GPU i of every server on rail switch i, rails joined by spines.

Link bandwidths.  A server has ``nics_per_server`` NICs of ``nic_bandwidth_bytes_per_s`` each.
Except in ``rail-optimized`` (one link per NIC, to its rail switch) a server's NICs all go to the
same switch and the fabric is modelled as ``nics_per_server`` identical parallel planes merged
into one: every network link is a bundle of ``nics_per_server`` cables (server uplink:
NICs x NIC rate; switch-to-switch: NICs x ``switch_bandwidth_bytes_per_s``), as multi-plane GPU
clusters are built.  With the defaults (8 NICs of 400 Gb/s, 400 Gb/s switch ports) every bundle
carries 3.2 Tb/s = 400 GB/s per direction.  Parallel links between the same two nodes are merged
into one whose bandwidth is their sum (the cluster model has one link per node pair).

Sparse variants (the paper evaluates them without defining them).  ``sparsity`` is the fraction
of candidate links removed: for ``fat-tree-thinned`` all edge-aggregation and aggregation-core
links, for ``dragonfly-sparse`` the global links (``fat-tree-sparse``: see its builder).
Candidates are visited in a fixed pseudo-random order (an FNV hash of ``seed`` and the link's
end names, independent of library versions) and each is removed unless that would disconnect
the fabric, until ``round(sparsity x candidates)`` are gone (fewer only if connectivity forbids
more).  The remaining links carry more (oversubscription); the sparse dragonfly's server pairs
get farther apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from simulator import timing
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError
from traces.infra.hashing import fnv1a_64_text
from traces.infra.options import Range, range_problem

# The ranges of the builders' parameters (families.py gives every shape parameter one)
AT_LEAST_ONE, NON_NEGATIVE, POSITIVE = Range(1), Range(0), Range(0, low_open=True)


@dataclass(frozen=True, slots=True)
class LinkDefaults:
    """Realistic defaults (DGX-H100-class servers, 400 Gb/s fabric; values and sources in
    :mod:`simulator.timing`); every one overridable."""

    gpus_per_server: int = field(default=8, metadata={"help": "GPUs per server.",
                                                      "range": AT_LEAST_ONE})
    nvlink_bandwidth_bytes_per_s: float = field(
        default=timing.H100_NVLINK_BYTES_PER_S.value,
        metadata={"help": "GPU <-> server NVLink fabric, each direction.", "range": POSITIVE},
    )
    nvlink_latency_s: float = field(
        default=timing.NVLINK_HOP_LATENCY_S.value, metadata={"help": "NVLink hop latency.",
                                                          "range": NON_NEGATIVE}
    )
    nics_per_server: int = field(
        default=8, metadata={"help": "NICs per server (bundled into one uplink, one plane each).",
                             "range": AT_LEAST_ONE}
    )
    nic_bandwidth_bytes_per_s: float = field(
        default=timing.NIC_400G_BYTES_PER_S.value,
        metadata={"help": "One NIC, each direction (400 Gb/s = 5e10).", "range": POSITIVE},
    )
    switch_bandwidth_bytes_per_s: float = field(
        default=timing.SWITCH_PORT_400G_BYTES_PER_S.value,
        metadata={"help": "One switch port / cable, each direction.", "range": POSITIVE},
    )
    network_latency_s: float = field(
        default=timing.NETWORK_HOP_LATENCY_S.value, metadata={"help": "Per network hop.",
                                                           "range": NON_NEGATIVE}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value, integer = getattr(self, f.name), f.type == "int" or f.type is int
            if not range_problem(value, f.metadata["range"]) and (
                    not integer or isinstance(value, int)):
                continue
            kind = "an integer" if integer else "a finite number"
            raise InputError(f"{f.name} must be {kind} {f.metadata['range'].text()},"
                             f" got {value!r}")

    @property
    def server_uplink_bytes_per_s(self) -> float:
        """All NICs of a server together."""
        return self.nics_per_server * self.nic_bandwidth_bytes_per_s

    @property
    def bundle_bytes_per_s(self) -> float:
        """A switch-to-switch link of one cable per plane."""
        return self.nics_per_server * self.switch_bandwidth_bytes_per_s


class FabricBuilder:
    """Accumulates nodes and links; parallel links between one node pair are merged."""

    def __init__(self, d: LinkDefaults) -> None:
        self.d = d
        self.nodes: list[NodeSpec] = []
        self.links: dict[tuple[str, str], LinkSpec] = {}
        self.num_servers = 0

    def switch(self, name: str, tier: str, group: int = -1) -> str:
        self.nodes.append(NodeSpec(name, "switch", tier=tier, group=group))
        return name

    def server(self, group: int) -> str:
        """A server with its GPUs and NVLink links, named s<index>, GPUs s<index>.g<i>."""
        d = self.d
        server = f"s{self.num_servers}"
        self.num_servers += 1
        self.nodes.append(NodeSpec(server, "server", group=group))
        for g in range(d.gpus_per_server):
            gpu = f"{server}.g{g}"
            self.nodes.append(NodeSpec(gpu, "gpu", server=server, group=group))
            self.link(gpu, server, d.nvlink_bandwidth_bytes_per_s, "nvlink", 0.0)
        return server

    def link(
        self, a: str, b: str, bandwidth: float, tier: str, weight: float = 1.0,
        nic_gpu: str = "",
    ) -> None:
        key = (min(a, b), max(a, b))
        latency = self.d.nvlink_latency_s if tier == "nvlink" else self.d.network_latency_s
        old = self.links.get(key)
        if old is not None:
            bandwidth += old.bandwidth_bytes_per_s
            a, b = old.a, old.b
        self.links[key] = LinkSpec(a, b, bandwidth, latency, weight, tier, nic_gpu)

    def remove(self, a: str, b: str) -> None:
        del self.links[(min(a, b), max(a, b))]

    def cluster(self, name: str, description: str) -> ClusterSpec:
        return ClusterSpec(name, tuple(self.nodes), tuple(self.links.values()), description)


def thin_links(fab: FabricBuilder, tiers: set[str], sparsity: float, seed: int) -> tuple[int, int]:
    """Remove ``round(sparsity x candidates)`` links of ``tiers``, keeping the fabric connected.

    Returns (removed, candidates).
    """
    return _remove_links(fab, lambda lk: lk.tier in tiers, sparsity, seed)


def _taper(fab: FabricBuilder, half: int, sparsity: float, seed: int) -> tuple[int, int, int]:
    """Edge switch e of a pod keeps its uplinks to aggregation switches e .. e+keep-1 (mod
    k/2), keep = max(1, floor((1 - sparsity) k/2)); the other uplinks are removed in hash
    order unless that would disconnect the fabric.  Returns (removed, candidates, keep)."""
    keep = max(1, math.floor((1.0 - sparsity) * half + 1e-9))

    def outside(lk: LinkSpec) -> bool:
        if lk.tier != "aggregation":
            return False
        edge, agg = sorted((lk.a, lk.b), key=lambda n: ".agg" in n)
        e, a = int(edge.rsplit("edge", 1)[1]), int(agg.rsplit("agg", 1)[1])
        return (a - e) % half >= keep

    return (*_remove_links(fab, outside, 1.0, seed), keep)


def _remove_links(
    fab: FabricBuilder, eligible: Callable[[LinkSpec], bool], fraction: float, seed: int
) -> tuple[int, int]:
    """Remove ``round(fraction x candidates)`` eligible links in hash order, never
    disconnecting the fabric.  Returns (removed, candidates)."""
    import networkx as nx

    cands = sorted(
        (lk for lk in fab.links.values() if eligible(lk)),
        key=lambda lk: (fnv1a_64_text(seed, min(lk.a, lk.b), max(lk.a, lk.b)), lk.a, lk.b),
    )
    target = round(fraction * len(cands))
    g = nx.Graph()
    g.add_nodes_from(n.name for n in fab.nodes)
    g.add_edges_from((lk.a, lk.b) for lk in fab.links.values())
    removed = 0
    for lk in cands:
        if removed == target:
            break
        g.remove_edge(lk.a, lk.b)
        if nx.has_path(g, lk.a, lk.b):
            fab.remove(lk.a, lk.b)
            removed += 1
        else:
            g.add_edge(lk.a, lk.b)
    return removed, len(cands)


def check_sparsity(family: str, sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise InputError(f"{family}: sparsity must be in [0, 1), got {sparsity}")


def _fat_tree(
    family: str, k: int, num_servers: int | None, d: LinkDefaults
) -> tuple[FabricBuilder, int]:
    if k < 2 or k % 2:
        raise InputError(f"{family}: k must be an even number >= 2, got {k}")
    half = k // 2
    capacity = k * half * half
    if num_servers is None:
        num_servers = capacity
    if not 1 <= num_servers <= capacity:
        raise InputError(
            f"{family}: a k={k} fat tree holds 1..{capacity} servers, asked for {num_servers}"
        )
    fab = FabricBuilder(d)
    pods_used = (num_servers + half * half - 1) // (half * half)
    for pod in range(pods_used):
        for a in range(half):
            fab.switch(f"p{pod}.agg{a}", "aggregation", pod)
        for e in range(half):
            first = pod * half * half + e * half
            if first >= num_servers:
                break
            edge = fab.switch(f"p{pod}.edge{e}", "edge", pod)
            for a in range(half):
                fab.link(edge, f"p{pod}.agg{a}", d.bundle_bytes_per_s, "aggregation")
            for _ in range(first, min(first + half, num_servers)):
                fab.link(fab.server(pod), edge, d.server_uplink_bytes_per_s, "access")
    if pods_used > 1:
        for c in range(half * half):
            fab.switch(f"core{c}", "core")
        for pod in range(pods_used):
            for a in range(half):
                for j in range(half):
                    fab.link(f"p{pod}.agg{a}", f"core{a * half + j}", d.bundle_bytes_per_s, "core")
    return fab, pods_used


def build_fat_tree(
    k: int = 4, num_servers: int | None = None, defaults: LinkDefaults | None = None
) -> ClusterSpec:
    """k-ary fat tree: k pods of k/2 edge and k/2 aggregation switches, (k/2)^2 cores.

    Servers fill the host slots in order (edge switch 0 of pod 0 first, k/2 servers per edge
    switch), so a ``num_servers`` below k^3/4 (the default: full) gives a partially populated
    fabric.  Only pods and edge switches that hold servers are built; cores only when more than
    one pod is used.  Edge switch ``e`` of a pod links to every aggregation switch of the pod;
    aggregation switch ``a`` links to cores ``a*k/2 .. a*k/2 + k/2 - 1``.  Every link is a
    bundle of one cable per NIC plane (module docstring), so the tree is non-blocking.

    Examples
    --------
    >>> c = build_fat_tree(4)
    >>> c.num_servers, c.num_gpus
    (16, 128)
    """
    d = defaults or LinkDefaults()
    fab, pods_used = _fat_tree("fat-tree", k, num_servers, d)
    n = fab.num_servers
    return fab.cluster(
        f"fat-tree-k{k}-{n}s",
        f"{k}-ary fat tree, {n} servers of {d.gpus_per_server} GPUs"
        f" ({pods_used} pod(s) used of {k})",
    )


def _pruned_fat_tree(
    family: str,
    k: int,
    num_servers: int | None,
    sparsity: float,
    defaults: LinkDefaults | None,
    prune: Callable[[FabricBuilder], str],
) -> ClusterSpec:
    """A fat tree of ``family`` whose links ``prune`` removes; ``prune`` says what it removed."""
    d = defaults or LinkDefaults()
    check_sparsity(family, sparsity)
    fab, pods_used = _fat_tree(family, k, num_servers, d)
    pruned = prune(fab)
    n = fab.num_servers
    return fab.cluster(
        f"{family}-k{k}-{n}s-{sparsity:g}",
        f"{k}-ary fat tree, {n} servers of {d.gpus_per_server} GPUs ({pods_used} pod(s)),"
        f" {pruned}",
    )


def build_fat_tree_sparse(
    k: int = 4,
    num_servers: int | None = None,
    sparsity: float = 0.5,
    seed: int = 0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """A k-ary fat tree whose edge switches keep only some aggregation uplinks (tapered).

    Edge switch e of a pod keeps the uplinks to aggregation switches e, e+1, ..,
    e+keep-1 (mod k/2), keep = max(1, floor((1 - sparsity) x k/2)); the others are removed
    in a fixed hash order (keyed by ``seed``) unless that would disconnect the fabric.  Edge
    switches whose windows share no aggregation switch then reach each other only through
    another edge switch (or another pod), so shortest paths get longer, unlike
    ``fat-tree-thinned``, where removed links leave equal-length paths at these sizes.

    Examples
    --------
    >>> from simulator.cluster.paths import gpu_distance_matrix
    >>> d_sparse = gpu_distance_matrix(build_fat_tree_sparse(4, 6))
    >>> bool(d_sparse.max() > gpu_distance_matrix(build_fat_tree(4, 6)).max())
    True
    """

    def taper(fab: FabricBuilder) -> str:
        removed, total, keep = _taper(fab, k // 2, sparsity, seed)
        return (
            f"edge switches keep {keep} of {k // 2} aggregation uplinks ({removed} of {total}"
            f" removed; sparsity {sparsity:g}, seed {seed})"
        )

    return _pruned_fat_tree("fat-tree-sparse", k, num_servers, sparsity, defaults, taper)


def build_fat_tree_thinned(
    k: int = 4,
    num_servers: int | None = None,
    sparsity: float = 0.5,
    seed: int = 0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """A k-ary fat tree with ``sparsity`` of its edge-aggregation and aggregation-core links
    removed (deterministic order keyed by ``seed``, never disconnecting; module docstring).

    Oversubscribes the fabric; at the paper study's sizes its distances equal the fat tree's.

    Examples
    --------
    >>> c = build_fat_tree_thinned(4, sparsity=0.5)
    >>> len(c.links) < len(build_fat_tree(4).links)
    True
    """

    def thin(fab: FabricBuilder) -> str:
        removed, total = thin_links(fab, {"aggregation", "core"}, sparsity, seed)
        return (
            f"{removed} of {total} switch-to-switch links removed (sparsity {sparsity:g},"
            f" seed {seed})"
        )

    return _pruned_fat_tree("fat-tree-thinned", k, num_servers, sparsity, defaults, thin)


def _check_common(
    family: str, num_servers: int, per_switch: int, num_spines: int, oversubscription: float
) -> None:
    if num_servers < 1:
        raise InputError(f"{family}: num_servers must be >= 1, got {num_servers}")
    if per_switch < 1:
        raise InputError(f"{family}: servers per switch must be >= 1, got {per_switch}")
    if num_spines < 1:
        raise InputError(f"{family}: num_spines must be >= 1, got {num_spines}")
    if not (math.isfinite(oversubscription) and oversubscription > 0):
        raise InputError(f"{family}: oversubscription must be > 0, got {oversubscription}")


def build_leaf_spine(
    num_servers: int = 16,
    servers_per_leaf: int = 4,
    num_spines: int = 4,
    oversubscription: float = 1.0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """Two-tier leaf-spine (folded Clos): ``servers_per_leaf`` servers on each leaf, every
    leaf linked to every spine.

    A leaf's uplinks together carry its server-facing capacity divided by
    ``oversubscription``: each leaf-spine link has servers_per_leaf x (server uplink) /
    (oversubscription x num_spines) per direction (1.0: non-blocking; 3.0: the common 3:1).
    The ratio is computed on the leaf's server ports, so a partly filled last leaf has the same
    uplinks as the others.
    """
    d = defaults or LinkDefaults()
    _check_common("leaf-spine", num_servers, servers_per_leaf, num_spines, oversubscription)
    fab = FabricBuilder(d)
    leaves = -(-num_servers // servers_per_leaf)
    uplink = servers_per_leaf * d.server_uplink_bytes_per_s / (oversubscription * num_spines)
    spines = [fab.switch(f"spine{s}", "spine") for s in range(num_spines)]
    for leaf_index in range(leaves):
        leaf = fab.switch(f"leaf{leaf_index}", "leaf", leaf_index)
        for spine in spines:
            fab.link(leaf, spine, uplink, "spine")
        for _ in range(min(servers_per_leaf, num_servers - fab.num_servers)):
            fab.link(fab.server(leaf_index), leaf, d.server_uplink_bytes_per_s, "access")
    return fab.cluster(
        f"leaf-spine-{num_servers}s-{oversubscription:g}to1",
        f"leaf-spine, {num_servers} servers of {d.gpus_per_server} GPUs on {leaves} leaves"
        f" x {num_spines} spines, oversubscription {oversubscription:g}:1",
    )


def build_rail_optimized(
    num_servers: int = 8,
    servers_per_group: int = 4,
    num_spines: int = 4,
    oversubscription: float = 1.0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """Rail-optimized fabric: servers in groups (scalable units) of ``servers_per_group``; each
    group has one rail switch per GPU index, and GPU i's NIC of every server of the group is on
    rail switch i; every rail switch links to every spine.

    The cluster model links each GPU only to its server node, so a server's NICs are links from
    the server node to each rail switch (one NIC each, ``nic_bandwidth_bytes_per_s``), and the
    link to rail i is GPU i's own NIC (``LinkSpec.nic_gpu``): the simulator sends GPU i's
    traffic through it, or through the NIC on the destination's rail where a dispatch scheme
    forwards over NVLink first (PXN).  Rail-spine links carry servers_per_group x NIC /
    (oversubscription x num_spines) each.  ``nics_per_server`` does not apply (one NIC per GPU).
    """
    d = defaults or LinkDefaults()
    _check_common("rail-optimized", num_servers, servers_per_group, num_spines, oversubscription)
    fab = FabricBuilder(d)
    groups = -(-num_servers // servers_per_group)
    rails = d.gpus_per_server
    uplink = servers_per_group * d.nic_bandwidth_bytes_per_s / (oversubscription * num_spines)
    spines = [fab.switch(f"spine{s}", "spine") for s in range(num_spines)]
    for grp in range(groups):
        names = [fab.switch(f"u{grp}.rail{i}", "rail", grp) for i in range(rails)]
        for rail in names:
            for spine in spines:
                fab.link(rail, spine, uplink, "spine")
        for _ in range(min(servers_per_group, num_servers - fab.num_servers)):
            server = fab.server(grp)
            for i, rail in enumerate(names):
                fab.link(
                    server, rail, d.nic_bandwidth_bytes_per_s, "rail", nic_gpu=f"{server}.g{i}"
                )
    return fab.cluster(
        f"rail-optimized-{num_servers}s-{oversubscription:g}to1",
        f"rail-optimized, {num_servers} servers of {d.gpus_per_server} GPUs in {groups} group(s)"
        f" of {servers_per_group}, {rails} rails, {num_spines} spines, oversubscription"
        f" {oversubscription:g}:1",
    )
