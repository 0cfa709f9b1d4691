"""Distances and deterministic ECMP paths between GPUs (pure networkx/numpy, no simpy).

* ``distance`` is the paper's cost: the weighted shortest path (hop weight 0 inside servers).
* The simulator's route between two GPUs is a shortest path by weight that, among those, uses
  the fewest links.  Where several remain (equal-cost multipath), each switch picks its next
  hop by a fixed hash of (source server, destination server, switch), as per-flow ECMP hashing
  does, so routes are deterministic and spread over the equal-cost paths; all GPU pairs of two
  servers share the route between the servers (their NICs sit on the server node).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError
from traces.infra.hashing import fnv1a_64

if TYPE_CHECKING:  # imported where a graph is searched: the multipath modes' names stay light
    import networkx as nx

_HOP_EPS = 1e-6  # tie-break among equal-weight paths by link count


def directed_link_id(link_index: int, forward: bool) -> int:
    """Directed link ids: 2*i for a->b of link i, 2*i+1 for b->a."""
    return 2 * link_index + (0 if forward else 1)


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Routes between every ordered pair of GPUs as lists of directed link ids.

    Every GPU hangs off its server node by one link, so a route between GPUs on different
    servers is: the source GPU's uplink, the *middle* route between the two server nodes
    (shared by every GPU pair of those two servers), and the destination GPU's downlink.
    Between GPUs of one server it is uplink then downlink.
    """

    cluster: ClusterSpec
    distance: np.ndarray  # [gpus, gpus] weighted shortest-path distance (paper's cost)
    gpu_uplink: np.ndarray  # [gpus] directed link id GPU -> its server
    gpu_downlink: np.ndarray  # [gpus] directed link id server -> GPU
    middle_offsets: np.ndarray  # [servers*servers + 1] CSR offsets of middle routes
    middle_links: np.ndarray  # directed link ids of all middle routes
    # next_hops[t][node]: the equal-cost next hops (sorted names) from node towards server t
    next_hops: tuple[dict[str, tuple[str, ...]], ...] = ()

    @property
    def num_gpus(self) -> int:
        return self.cluster.num_gpus

    @property
    def num_servers(self) -> int:
        return self.cluster.num_servers

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

    @cached_property
    def pair_offsets(self) -> np.ndarray:
        n = self.num_gpus
        lengths = np.array(
            [len(self.path(a, b)) for a in range(n) for b in range(n)], dtype=np.int64
        )
        out = np.zeros(n * n + 1, dtype=np.int64)
        out[1:] = np.cumsum(lengths)
        return out

    @cached_property
    def pair_links(self) -> np.ndarray:
        """Directed link ids of every pair's route, concatenated in pair order src*gpus+dst."""
        n = self.num_gpus
        parts = [self.path(a, b) for a in range(n) for b in range(n)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    @cached_property
    def path_lengths(self) -> np.ndarray:
        """Links on each pair's route, [gpus, gpus]."""
        return np.diff(self.pair_offsets).reshape(self.num_gpus, self.num_gpus)

    @cached_property
    def pair_of_entry(self) -> np.ndarray:
        """For each entry of ``pair_links``, the flat pair index src*gpus+dst it belongs to."""
        return np.repeat(np.arange(self.num_gpus**2), np.diff(self.pair_offsets))


def _stable_hash(*xs: int) -> int:
    return fnv1a_64(x & 0xFFFFFFFF for x in xs)


def _network(cluster: ClusterSpec) -> nx.Graph:
    """The graph without GPUs: GPUs are leaves, so no route between servers passes one."""
    gpus = set(cluster.gpus)
    return cluster.graph.subgraph(n for n in cluster.graph.nodes if n not in gpus)


def _gpu_link_weights(cluster: ClusterSpec) -> np.ndarray:
    g = cluster.graph
    by_name = {n.name: n for n in cluster.nodes}
    return np.array(
        [float(g.edges[gpu, by_name[gpu].server]["weight"]) for gpu in cluster.gpus]
    )


def server_node_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Weighted shortest-path distance between server nodes, [servers, servers]."""
    import networkx as nx

    net = _network(cluster)
    servers = cluster.servers
    out = np.zeros((len(servers), len(servers)))
    for i, src in enumerate(servers):
        d = nx.single_source_dijkstra_path_length(net, src, weight="weight")
        out[i] = [d[t] for t in servers]
    return out


def gpu_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Weighted shortest-path distance between every pair of GPUs, [gpus, gpus].

    Every GPU is a leaf on its server node, so distance(a, b) = w(a) + D(server a, server b)
    + w(b) for a != b, with w the weight of a GPU's link and D the server-node distance.
    """
    w = _gpu_link_weights(cluster)
    gs = cluster.gpu_server
    out = w[:, None] + server_node_distance_matrix(cluster)[gs[:, None], gs[None, :]] + w[None, :]
    np.fill_diagonal(out, 0.0)
    return out


def server_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Distance between servers, [servers, servers]: the smallest GPU-to-GPU distance."""
    d = gpu_distance_matrix(cluster)
    gs = cluster.gpu_server
    s = cluster.num_servers
    out = np.full((s, s), np.inf)
    for a in range(s):
        rows = d[gs == a]
        for b in range(s):
            out[a, b] = rows[:, gs == b].min()
    return out


def _composite(u: str, v: str, attrs: dict) -> float:
    return float(attrs["weight"]) + _HOP_EPS


def equal_cost_next_hops(graph: nx.Graph, target: str) -> dict[str, tuple[str, ...]]:
    """For every node of ``graph`` that reaches ``target``: its next hops (sorted names) on the
    shortest paths by weight, then by link count; ``target`` maps to ()."""
    import networkx as nx

    dist = nx.single_source_dijkstra_path_length(graph, target, weight=_composite)
    nh: dict[str, tuple[str, ...]] = {target: ()}
    for u, du in dist.items():
        if u != target:
            nh[u] = tuple(
                sorted(
                    v for v in graph.neighbors(u)
                    if abs(_composite(u, v, graph.edges[u, v]) + dist[v] - du) < 1e-9
                )
            )
    return nh


def build_route_table(cluster: ClusterSpec) -> RouteTable:
    """Deterministic ECMP routes between all GPU pairs (see module and class docstrings)."""
    from traces.infra.limits import check_memory

    # the GPU distance matrix (float64) and the route offsets of every server pair
    need = 8 * cluster.num_gpus**2 + 8 * cluster.num_servers**2
    check_memory(need, f"the route table of {cluster.num_gpus} GPUs",
                 "a cluster this size needs a machine with more memory")
    g = cluster.graph
    gpus = cluster.gpus
    servers = cluster.servers
    node_index = {name: i for i, name in enumerate(g.nodes)}
    up = np.zeros(len(gpus), dtype=np.int64)
    down = np.zeros(len(gpus), dtype=np.int64)
    by_name = {n.name: n for n in cluster.nodes}
    for i, gpu in enumerate(gpus):
        server = by_name[gpu].server  # validate_cluster: the GPU's one link goes there
        link = g.edges[gpu, server]["index"]
        forward = cluster.links[link].a == gpu
        up[i] = directed_link_id(link, forward)
        down[i] = directed_link_id(link, not forward)

    sub = _network(cluster)
    ns = len(servers)
    middles: list[list[int]] = [[] for _ in range(ns * ns)]
    next_hops: list[dict[str, tuple[str, ...]]] = []
    for j, dst in enumerate(servers):
        nh = equal_cost_next_hops(sub, dst)
        next_hops.append(nh)
        for i, src in enumerate(servers):
            if i == j:
                continue
            if src not in nh:
                raise InputError(f"cluster {cluster.name!r}: server {src!r} cannot reach {dst!r}")
            route: list[int] = []
            u = src
            while u != dst:
                cands = nh[u]
                v = cands[_stable_hash(i, j, node_index[u]) % len(cands)]
                link = g.edges[u, v]["index"]
                route.append(directed_link_id(link, cluster.links[link].a == u))
                u = v
            middles[i * ns + j] = route
    offsets = np.zeros(ns * ns + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in middles])
    flat = np.fromiter((x for p in middles for x in p), dtype=np.int64, count=int(offsets[-1]))
    return RouteTable(
        cluster=cluster,
        distance=gpu_distance_matrix(cluster),
        gpu_uplink=up,
        gpu_downlink=down,
        middle_offsets=offsets,
        middle_links=flat,
        next_hops=tuple(next_hops),
    )
