"""Servers as they reach the network: most hang off one switch by one link.

A *leaf* server has exactly one network link, to its *attachment* node (its edge, leaf or
rail switch).  No route passes through a leaf, so every equal-cost route from or to it is that
link plus a route from or to the attachment, and the next hops towards a leaf server are the
next hops towards its attachment (the shortest distances differ by the link's cost only).
The routing state is therefore kept for the *core*: the network without leaf servers, with
one target per distinct attachment, so it grows with switches, not with servers, let alone
GPUs.  A server with several network links (or none) is its own attachment and stays in the
core.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cluster.equal_cost import (
    EqualCostDag,
    Fabric,
    directed_link_id,
    distances_to,
    fabric_of,
)
from simulator.cluster.topology import ClusterSpec


@dataclass(frozen=True, eq=False)
class ServerAttachment:
    """The core fabric, its equal-cost graph towards every attachment, and the servers on it."""

    core: EqualCostDag  # targets: the distinct attachments (core node indices, sorted)
    attach: np.ndarray  # [servers] core node index where the server's traffic enters
    target: np.ndarray  # [servers] position of the server's attachment in core.targets
    up: np.ndarray  # [servers] directed link server -> attachment (-1: not a leaf)
    down: np.ndarray  # [servers] directed link attachment -> server (-1: not a leaf)
    link_weight: np.ndarray  # [servers] hop weight of the leaf link (0: not a leaf)
    server_names: tuple[str, ...]

    @property
    def fabric(self) -> Fabric:
        return self.core.fabric

    @property
    def is_leaf(self) -> np.ndarray:
        return self.up >= 0

    @cached_property
    def core_distance(self) -> np.ndarray:
        """Weighted distance from every core node to every attachment, [targets, nodes]."""
        return distances_to(self.fabric, self.core.targets, 0.0)

    def server_distance(self) -> np.ndarray:
        """Weighted shortest-path distance between server nodes, [servers, servers]."""
        w = self.link_weight
        d = self.core_distance[self.target[None, :], self.attach[:, None]]
        out = (w[:, None] + d) + w[None, :]
        np.fill_diagonal(out, 0.0)
        return out

    def hops(self, depth: np.ndarray) -> np.ndarray:
        """Links on the route between server nodes, [servers, servers], from the core depths
        ``depth`` [targets, nodes] (0 on the diagonal)."""
        leaf = self.is_leaf.astype(np.int64)
        out = leaf[:, None] + depth[self.target[None, :], self.attach[:, None]] + leaf[None, :]
        np.fill_diagonal(out, 0)
        return out

    def unreachable(self) -> tuple[int, int] | None:
        """A (source, destination) server pair with no route, if any."""
        d = self.core.distance[self.target[None, :], self.attach[:, None]]
        bad = ~np.isfinite(d)
        np.fill_diagonal(bad, False)
        if not bad.any():
            return None
        i, j = np.argwhere(bad)[0]
        return int(i), int(j)

    def next_hops(self, t: int) -> dict[str, tuple[str, ...]]:
        """Next hops (sorted names) of every network node that reaches server ``t``."""
        f = self.fabric
        out = self.core.next_hops(int(self.target[t]))
        name_t = self.server_names[t]
        if self.up[t] >= 0:
            out[f.names[self.attach[t]]] = (name_t,)
        out[name_t] = ()
        for s in np.flatnonzero(self.is_leaf).tolist():
            first = f.names[self.attach[s]]
            if s != t and first in out:
                out[self.server_names[s]] = (first,)
        return out


def attach_servers(cluster: ClusterSpec) -> ServerAttachment:
    """Split the network (no GPUs) into leaf servers and the core (module docstring)."""
    gpus = set(cluster.gpus)
    servers = cluster.servers
    degree = dict.fromkeys(servers, 0)
    only: dict[str, tuple[str, int, bool, float]] = {}
    for i, lk in enumerate(cluster.links):
        if lk.a in gpus or lk.b in gpus:
            continue
        for s, other, forward in ((lk.a, lk.b, True), (lk.b, lk.a, False)):
            if s in degree:
                degree[s] += 1
                only[s] = (other, i, forward, float(lk.weight))
    # two servers linked only to each other are no leaves (neither is reachable anyway)
    leaf = {s for s in servers if degree[s] == 1 and degree.get(only[s][0], 0) != 1}
    core = fabric_of(cluster, {n.name for n in cluster.nodes
                               if n.name not in gpus and n.name not in leaf})
    ns = len(servers)
    attach = np.zeros(ns, dtype=np.int64)
    up = np.full(ns, -1, dtype=np.int64)
    down = np.full(ns, -1, dtype=np.int64)
    weight = np.zeros(ns)
    for k, s in enumerate(servers):
        if s in leaf:
            other, i, forward, w = only[s]
            attach[k] = core.index[other]
            up[k] = directed_link_id(i, forward)
            down[k] = directed_link_id(i, not forward)
            weight[k] = w
        else:
            attach[k] = core.index[s]
    targets = np.unique(attach)
    dag = EqualCostDag.build(core, targets)
    return ServerAttachment(dag, attach, np.searchsorted(targets, attach), up, down, weight,
                            servers)
