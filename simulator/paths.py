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

import networkx as nx
import numpy as np

from simulator.topology import ClusterSpec
from traces.errors import InputError

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
        mid = self.middle(int(gs[src]), int(gs[dst])) if gs[src] != gs[dst] else []
        return np.concatenate([[self.gpu_uplink[src]], mid, [self.gpu_downlink[dst]]]).astype(
            np.int64
        )

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
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (x & 0xFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def gpu_distance_matrix(cluster: ClusterSpec) -> np.ndarray:
    """Weighted shortest-path distance between every pair of GPUs, [gpus, gpus]."""
    g = cluster.graph
    gpus = cluster.gpus
    out = np.zeros((len(gpus), len(gpus)))
    for i, src in enumerate(gpus):
        d = nx.single_source_dijkstra_path_length(g, src, weight="weight")
        out[i] = [d[t] for t in gpus]
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


def build_route_table(cluster: ClusterSpec) -> RouteTable:
    """Deterministic ECMP routes between all GPU pairs (see module and class docstrings)."""
    g = cluster.graph
    gpus = cluster.gpus
    servers = cluster.servers
    node_index = {name: i for i, name in enumerate(g.nodes)}
    up = np.zeros(len(gpus), dtype=np.int64)
    down = np.zeros(len(gpus), dtype=np.int64)
    by_name = {n.name: n for n in cluster.nodes}
    for i, gpu in enumerate(gpus):
        nbrs = list(g.neighbors(gpu))
        server = by_name[gpu].server
        if nbrs != [server]:
            raise InputError(
                f"cluster {cluster.name!r}: GPU {gpu!r} must be linked to its server"
                f" {server!r} and to nothing else (NICs attach to the server node)"
            )
        link = g.edges[gpu, server]["index"]
        forward = cluster.links[link].a == gpu
        up[i] = directed_link_id(link, forward)
        down[i] = directed_link_id(link, not forward)

    def composite(u: str, v: str, attrs: dict) -> float:
        return float(attrs["weight"]) + _HOP_EPS

    ns = len(servers)
    middles: list[list[int]] = [[] for _ in range(ns * ns)]
    gpu_set = set(gpus)
    for j, dst in enumerate(servers):
        # GPUs are leaves: they never lie on a route between two server nodes.
        sub = g.subgraph(n for n in g.nodes if n not in gpu_set)
        dist_to = nx.single_source_dijkstra_path_length(sub, dst, weight=composite)
        for i, src in enumerate(servers):
            if i == j:
                continue
            if src not in dist_to:
                raise InputError(f"cluster {cluster.name!r}: server {src!r} cannot reach {dst!r}")
            route: list[int] = []
            u = src
            while u != dst:
                du = dist_to[u]
                cands = sorted(
                    v
                    for v in sub.neighbors(u)
                    if v in dist_to and abs(composite(u, v, g.edges[u, v]) + dist_to[v] - du) < 1e-9
                )
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
    )
