"""Distances and deterministic ECMP paths between GPUs (pure numpy, no simpy).

* ``distance`` is the paper's cost: the weighted shortest path (hop weight 0 inside servers).
* The simulator's route between two GPUs is a shortest path by weight that, among those, uses
  the fewest links.  Where several remain (equal-cost multipath), each switch picks its next
  hop by a fixed hash of (source server, destination server, switch), as per-flow ECMP hashing
  does, so routes are deterministic and spread over the equal-cost paths; all GPU pairs of two
  servers share the route between the servers (their NICs sit on the server node).

Storage is server-level: every GPU reaches the network through its server, so the table keeps
the GPU-to-server attachment (one link each way and its weight), the routes and distances
between server nodes, and the equal-cost next hops towards every server
(:mod:`simulator.cluster.attachment`).  Memory grows with servers squared times
route length, not with GPUs squared; GPU-pair quantities are computed from these on demand
(:class:`GpuDistance`), and the dense [gpus, gpus] matrices (``distance``, ``path_lengths``)
are built only when asked for, after a size check.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from simulator.cluster.attachment import ServerAttachment, attach_servers
from simulator.cluster.equal_cost import directed_link_id
from simulator.cluster.link_loads import HashedWalker
from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError
from traces.infra.hashing import fnv1a_64
from traces.infra.limits import check_memory

__all__ = [
    "GpuDistance", "RouteTable", "build_route_table", "directed_link_id", "gpu_distance_matrix",
    "route_table_bytes", "server_node_distance_matrix",
]


@dataclass(frozen=True, eq=False)
class GpuDistance:
    """The weighted distance between GPUs, indexed like the [gpus, gpus] matrix without it.

    ``d[a, b] = w(a) + D(server a, server b) + w(b)`` for a != b and 0 for a == b, with w the
    weight of a GPU's link to its server and D the server-node distance; ``a`` and ``b`` may
    be index arrays (they broadcast as in numpy fancy indexing).
    """

    link_weight: np.ndarray  # [gpus]
    gpu_server: np.ndarray  # [gpus]
    server_distance: np.ndarray  # [servers, servers]

    @property
    def shape(self) -> tuple[int, int]:
        n = int(self.link_weight.shape[0])
        return (n, n)

    def __getitem__(self, key: tuple[Any, Any]) -> np.ndarray:
        a, b = (np.asarray(k) for k in key)
        w, gs = self.link_weight, self.gpu_server
        out = w[a] + self.server_distance[gs[a], gs[b]] + w[b]
        return np.where(a == b, 0.0, out)

    def dense(self) -> np.ndarray:
        w, gs = self.link_weight, self.gpu_server
        out = w[:, None] + self.server_distance[gs[:, None], gs[None, :]] + w[None, :]
        np.fill_diagonal(out, 0.0)
        return out


class _NextHops(Sequence[dict[str, tuple[str, ...]]]):
    """``next_hops[t][node]``: the equal-cost next hops (sorted names) from node towards server
    t, built per server on first use from the table's arrays."""

    def __init__(self, net: ServerAttachment) -> None:
        self._net = net
        self._cache: dict[int, dict[str, tuple[str, ...]]] = {}

    def __len__(self) -> int:
        return int(self._net.attach.shape[0])

    def __getitem__(self, t: int) -> dict[str, tuple[str, ...]]:  # type: ignore[override]
        got = self._cache.get(t)
        if got is None:
            got = self._cache[t] = self._net.next_hops(int(t))
        return got

    def __iter__(self) -> Iterator[dict[str, tuple[str, ...]]]:
        return (self[t] for t in range(len(self)))


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Routes between every ordered pair of GPUs, stored per server pair.

    Every GPU hangs off its server node by one link, so a route between GPUs on different
    servers is: the source GPU's uplink, the *middle* route between the two server nodes
    (shared by every GPU pair of those two servers), and the destination GPU's downlink.
    Between GPUs of one server it is uplink then downlink.
    """

    cluster: ClusterSpec
    server_distance: np.ndarray  # [servers, servers] weighted distance between server nodes
    gpu_link_weight: np.ndarray  # [gpus] hop weight of each GPU's link to its server
    gpu_uplink: np.ndarray  # [gpus] directed link id GPU -> its server
    gpu_downlink: np.ndarray  # [gpus] directed link id server -> GPU
    middle_offsets: np.ndarray  # [servers*servers + 1] CSR offsets of middle routes
    middle_links: np.ndarray  # directed link ids of all middle routes
    net: ServerAttachment  # the servers' attachment to the core and its equal-cost graph

    @property
    def num_gpus(self) -> int:
        return self.cluster.num_gpus

    @property
    def num_servers(self) -> int:
        return self.cluster.num_servers

    @cached_property
    def gpu_distance(self) -> GpuDistance:
        """The paper's distance between GPUs, computed per pair (no [gpus, gpus] matrix)."""
        return GpuDistance(self.gpu_link_weight, self.cluster.gpu_server, self.server_distance)

    @cached_property
    def distance(self) -> np.ndarray:
        """The dense [gpus, gpus] distance matrix (placement uses it), after a size check."""
        _check_dense(self.cluster, "the GPU distance matrix")
        return self.gpu_distance.dense()

    @cached_property
    def next_hops(self) -> _NextHops:
        return _NextHops(self.net)

    def middle(self, src_server: int, dst_server: int) -> np.ndarray:
        p = src_server * self.num_servers + dst_server
        return self.middle_links[self.middle_offsets[p] : self.middle_offsets[p + 1]]

    def path(self, src: int, dst: int) -> np.ndarray:
        """Directed link ids from GPU src to GPU dst (empty when src == dst)."""
        if src == dst:
            return np.zeros(0, dtype=np.int64)
        gs = self.cluster.gpu_server
        mid: np.ndarray | list[int] = (
            self.middle(int(gs[src]), int(gs[dst])) if gs[src] != gs[dst] else []
        )
        return np.concatenate([[self.gpu_uplink[src]], mid, [self.gpu_downlink[dst]]]).astype(
            np.int64
        )

    @cached_property
    def server_hops(self) -> np.ndarray:
        """Links on the chosen route between server nodes, [servers, servers]."""
        return np.diff(self.middle_offsets).reshape(self.num_servers, self.num_servers)

    def path_length(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Links on the route of each GPU pair (src[i], dst[i]) (0 when src == dst)."""
        src, dst = np.asarray(src), np.asarray(dst)
        gs = self.cluster.gpu_server
        out = self.server_hops[gs[src], gs[dst]] + 2
        return np.where(src == dst, 0, out)

    @cached_property
    def path_lengths(self) -> np.ndarray:
        """Links on each pair's route, the dense [gpus, gpus] matrix (after a size check)."""
        _check_dense(self.cluster, "the GPU-pair route lengths")
        n = np.arange(self.num_gpus)
        return self.path_length(n[:, None], n[None, :])

    def middle_routes(self, src_server: int, dst_server: int) -> list[tuple[np.ndarray, float]]:
        """Every equal-cost route between two server nodes with its ECMP share.

        Routes are the shortest by weight, then by link count (the same set the chosen route
        ``middle`` is drawn from), in a fixed order (next hops by name).  The share of a route
        is the product over its switches of 1 / (equal-cost next hops there): the split that
        per-hop ECMP spreads many flows into.  Shares sum to 1.  The number of routes can grow
        fast with the fabric (a full k-ary fat tree has (k/2)^2 between pods);
        :meth:`middle_link_shares` gives the same split per link without listing routes.
        """
        if src_server == dst_server:
            return []
        nh = self.next_hops[dst_server]
        dst = self.cluster.servers[dst_server]
        out: list[tuple[np.ndarray, float]] = []

        def walk(u: str, links: list[int], share: float) -> None:
            if u == dst:
                out.append((np.array(links, dtype=np.int64), share))
                return
            for v in nh[u]:
                walk(v, [*links, self._directed(u, v)], share / len(nh[u]))

        walk(self.cluster.servers[src_server], [], 1.0)
        return out

    def middle_link_shares(self, src_server: int, dst_server: int) -> dict[int, float]:
        """Directed link id -> share of the server pair's traffic under per-hop ECMP split."""
        if src_server == dst_server:
            return {}
        nh = self.next_hops[dst_server]
        dst = self.cluster.servers[dst_server]
        at: dict[str, float] = {self.cluster.servers[src_server]: 1.0}
        out: dict[int, float] = {}
        # nodes on equal-cost routes strictly decrease the distance to dst: a DAG, so
        # processing nodes in order of decreasing distance visits each after all its parents
        order = self._order_by_distance(dst_server)
        for u in order:
            if u not in at or u == dst:
                continue
            share = at.pop(u) / len(nh[u])
            for v in nh[u]:
                out[self._directed(u, v)] = out.get(self._directed(u, v), 0.0) + share
                at[v] = at.get(v, 0.0) + share
        return out

    def _order_by_distance(self, dst_server: int) -> list[str]:
        # longest remaining route first; routes shrink by one link per hop
        nh = self.next_hops[dst_server]
        depth: dict[str, int] = {self.cluster.servers[dst_server]: 0}

        def d(u: str) -> int:
            if u not in depth:
                depth[u] = 1 + d(nh[u][0])
            return depth[u]

        return sorted(nh, key=lambda u: (-d(u), u))

    def _directed(self, u: str, v: str) -> int:
        link = int(self.cluster.graph.edges[u, v]["index"])
        return directed_link_id(link, self.cluster.links[link].a == u)


def _stable_hash(*xs: int) -> int:
    return fnv1a_64(x & 0xFFFFFFFF for x in xs)


def _check_dense(cluster: ClusterSpec, what: str) -> None:
    g = cluster.num_gpus
    check_memory(8.0 * g * g, f"cluster {cluster.name!r}: {what} (a {g} x {g} GPU-pair"
                 " matrix)", "placement needs GPU-pair matrices; replay (simulate) works per"
                 " server pair")


def _gpu_links(cluster: ClusterSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uplink, downlink, weight) of every GPU's one link to its server (validate_cluster)."""
    by_name = {n.name: n for n in cluster.nodes}
    gpu_index = {g: i for i, g in enumerate(cluster.gpus)}
    g = len(gpu_index)
    up = np.full(g, -1, dtype=np.int64)
    down = np.full(g, -1, dtype=np.int64)
    w = np.zeros(g)
    for li, lk in enumerate(cluster.links):
        for gpu, other, forward in ((lk.a, lk.b, True), (lk.b, lk.a, False)):
            i = gpu_index.get(gpu)
            if i is not None and by_name[gpu].server == other:
                up[i] = directed_link_id(li, forward)
                down[i] = directed_link_id(li, not forward)
                w[i] = float(lk.weight)
    return up, down, w


def server_node_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Weighted shortest-path distance between server nodes, [servers, servers]."""
    return attach_servers(cluster).server_distance()


def gpu_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Weighted shortest-path distance between every pair of GPUs, [gpus, gpus].

    Every GPU is a leaf on its server node, so distance(a, b) = w(a) + D(server a, server b)
    + w(b) for a != b, with w the weight of a GPU's link and D the server-node distance.
    """
    _check_dense(cluster, "the GPU distance matrix")
    _, _, w = _gpu_links(cluster)
    return GpuDistance(w, cluster.gpu_server, server_node_distance_matrix(cluster)).dense()


def route_table_bytes(num_servers: int, route_links: float) -> float:
    """Bytes of a route table whose middle routes hold ``route_links`` links in all: the
    routes (CSR), the server distances and the walk that builds them (a few words per pair)."""
    s = float(num_servers)
    return 8.0 * (route_links + 8 * s * s)


def build_route_table(cluster: ClusterSpec) -> RouteTable:
    """Deterministic ECMP routes between all GPU pairs (see module and class docstrings)."""
    up, down, w = _gpu_links(cluster)
    net = attach_servers(cluster)
    ns = cluster.num_servers
    where = f"cluster {cluster.name!r}"
    bad = net.unreachable()
    if bad is not None:
        raise InputError(f"{where}: server {cluster.servers[bad[0]]!r} cannot reach"
                         f" {cluster.servers[bad[1]]!r}")
    core = net.core
    depth = np.stack([core.depth(t) for t in range(len(core.targets))]) if ns else np.zeros(
        (0, 0), dtype=np.int64)
    hops = net.hops(depth)
    check_memory(route_table_bytes(ns, float(hops.sum())),
                 f"{where}: the route table of {ns} servers",
                 "describe fewer servers (replay works per server pair)")
    offsets = np.zeros(ns * ns + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(hops.ravel())
    return RouteTable(
        cluster=cluster,
        server_distance=net.server_distance(),
        gpu_link_weight=w,
        gpu_uplink=up,
        gpu_downlink=down,
        middle_offsets=offsets,
        middle_links=_hashed_middles(net, offsets),
        net=net,
    )


def _hashed_middles(net: ServerAttachment, offsets: np.ndarray) -> np.ndarray:
    """The hashed route of every ordered server pair, concatenated in pair order i*S+j: the
    leaf link up, one next hop per core node picked by hash(i, j, node), the leaf link down."""
    f = net.fabric
    ns = net.attach.shape[0]
    flat = np.zeros(int(offsets[-1]), dtype=np.int64)
    i, j = np.divmod(np.arange(ns * ns, dtype=np.int64), ns)
    keep = i != j
    i, j = i[keep], j[keep]
    pos = offsets[i * ns + j]
    leaf_i = net.up[i] >= 0
    flat[pos[leaf_i]] = net.up[i[leaf_i]]
    pos = pos + leaf_i
    walker = HashedWalker.build(net.core)
    t = net.target[j]
    u = net.attach[i]
    goal = net.attach[j]
    going = u != goal
    i, j, t, u, goal, pos = (x[going] for x in (i, j, t, u, goal, pos))
    while i.size:
        e = walker.next_edges(u, t, (i, j))
        flat[pos] = f.link[e]
        u = f.dst[e]
        going = u != goal
        i, j, t, u, goal, pos = (x[going] for x in (i, j, t, u, goal, pos + 1))
    leaf_j = np.flatnonzero(net.down >= 0)
    ends = offsets[1:].reshape(ns, ns)[:, leaf_j] - 1  # last link of each pair's route
    src = np.repeat(np.arange(ns), leaf_j.size)
    mask = src != np.tile(leaf_j, ns)
    flat[ends.ravel()[mask]] = np.tile(net.down[leaf_j], ns)[mask]
    return flat
