"""Equal-cost next hops towards many targets at once, as arrays (pure numpy, no networkx walk).

The routing rule of :mod:`simulator.cluster.paths`: a route is a shortest path by weight that,
among those, uses the fewest links; at every node the *next hops* towards a target are the
neighbours on such paths, sorted by name.  :class:`EqualCostDag` holds, for a set of targets,
the composite distance (weight + ``HOP_EPS`` per link) of every node of a fabric to every target,
[targets, nodes], and derives each target's next hops from it on demand: memory grows with
targets x nodes, never with GPU pairs.

Distances come from a Bellman-Ford relaxation vectorised over all targets of a chunk (the
fabrics are undirected, so the distance from a target is the distance to it); it computes
``d[v] = d[u] + w(u, v)`` along the same shortest paths Dijkstra does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cluster.topology import ClusterSpec

HOP_EPS = 1e-6  # tie-break among equal-weight paths by link count
NEXT_HOP_TOL = 1e-9  # an edge is on a shortest path when it closes the distance this well
_CHUNK_CELLS = 1 << 22  # targets x directed edges relaxed at once (memory of one step)


def directed_link_id(link_index: int, forward: bool) -> int:
    """Directed link ids: 2*i for a->b of link i, 2*i+1 for b->a."""
    return 2 * link_index + (0 if forward else 1)


@dataclass(frozen=True, eq=False)
class Fabric:
    """The nodes and directed edges of a subgraph of a cluster, as arrays.

    Edges are sorted by source node, then by the destination's name, so the next hops of a
    node come out in name order.  ``salt`` is every node's position in ``cluster.nodes`` (the
    index the ECMP hash mixes in).
    """

    names: tuple[str, ...]
    salt: np.ndarray  # [nodes]
    src: np.ndarray  # [directed edges] node index
    dst: np.ndarray
    weight: np.ndarray  # hop weight of the edge's link
    link: np.ndarray  # directed link id
    offsets: np.ndarray  # [nodes + 1] CSR of edges by source

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


def fabric_of(cluster: ClusterSpec, keep: set[str]) -> Fabric:
    """The subgraph of ``cluster`` on the nodes named in ``keep`` (cluster node order)."""
    names = tuple(n.name for n in cluster.nodes if n.name in keep)
    pos = {n.name: i for i, n in enumerate(cluster.nodes)}
    index = {n: i for i, n in enumerate(names)}
    rows: list[tuple[int, str, int, float, int]] = []
    for i, lk in enumerate(cluster.links):
        if lk.a in index and lk.b in index:
            rows.append((index[lk.a], lk.b, index[lk.b], lk.weight, directed_link_id(i, True)))
            rows.append((index[lk.b], lk.a, index[lk.a], lk.weight, directed_link_id(i, False)))
    rows.sort(key=lambda r: (r[0], r[1]))
    src = np.array([r[0] for r in rows], dtype=np.int64)
    offsets = np.searchsorted(src, np.arange(len(names) + 1)).astype(np.int64)
    return Fabric(
        names=names,
        salt=np.array([pos[n] for n in names], dtype=np.int64),
        src=src,
        dst=np.array([r[2] for r in rows], dtype=np.int64),
        weight=np.array([r[3] for r in rows], dtype=np.float64),
        link=np.array([r[4] for r in rows], dtype=np.int64),
        offsets=offsets,
    )


def distances_to(fabric: Fabric, targets: np.ndarray, per_link: float) -> np.ndarray:
    """Shortest distance by ``weight + per_link`` from every node to every target,
    [targets, nodes] (inf where unreachable)."""
    n = fabric.num_nodes
    out = np.full((len(targets), n), np.inf)
    cost = fabric.weight + per_link
    order = np.argsort(fabric.dst, kind="stable")
    dst_sorted = fabric.dst[order]
    # edges grouped by destination: relax every node's in-edges with one reduceat
    heads = np.flatnonzero(np.r_[True, dst_sorted[1:] != dst_sorted[:-1]][: dst_sorted.size])
    has_in = dst_sorted[heads]
    step = max(1, _CHUNK_CELLS // max(1, fabric.src.size))
    for lo in range(0, len(targets), step):
        t = np.asarray(targets[lo : lo + step])
        d = out[lo : lo + len(t)]
        d[np.arange(len(t)), t] = 0.0
        while dst_sorted.size:
            cand = (d[:, fabric.src] + cost)[:, order]
            best = np.minimum.reduceat(cand, heads, axis=1)
            cur = d[:, has_in]
            better = best < cur
            if not better.any():
                break
            d[:, has_in] = np.where(better, best, cur)
    return out


@dataclass(frozen=True, eq=False)
class EqualCostDag:
    """Equal-cost next hops of every node towards each of ``targets`` (module docstring)."""

    fabric: Fabric
    targets: np.ndarray  # [targets] node index
    distance: np.ndarray  # [targets, nodes] composite distance (weight + HOP_EPS per link)

    @classmethod
    def build(cls, fabric: Fabric, targets: np.ndarray) -> EqualCostDag:
        targets = np.asarray(targets, dtype=np.int64)
        return cls(fabric, targets, distances_to(fabric, targets, HOP_EPS))

    def mask(self, t: int) -> np.ndarray:
        """Directed edges that are next hops towards target ``t`` (its position), [edges]."""
        f = self.fabric
        d = self.distance[t]
        du = d[f.src]
        return np.isfinite(du) & (np.abs(f.weight + HOP_EPS + d[f.dst] - du) < NEXT_HOP_TOL)

    def reaches(self, t: int) -> np.ndarray:
        """Nodes that reach target ``t``, [nodes] bool."""
        return np.isfinite(self.distance[t])

    def next_hops(self, t: int) -> dict[str, tuple[str, ...]]:
        """Next hops (sorted names) of every node that reaches target ``t``; it maps to ()."""
        f = self.fabric
        m = self.mask(t)
        names = f.names
        out: dict[str, tuple[str, ...]] = {}
        cut = np.cumsum(np.r_[0, m])[f.offsets]
        chosen = f.dst[m]
        for u in np.flatnonzero(self.reaches(t)).tolist():
            out[names[u]] = tuple(names[v] for v in chosen[cut[u] : cut[u + 1]].tolist())
        return out

    def depth(self, t: int, m: np.ndarray | None = None) -> np.ndarray:
        """Links from every node to target ``t`` along its next hops (-1: unreachable)."""
        f = self.fabric
        m = self.mask(t) if m is None else m
        first = np.full(f.num_nodes, -1, dtype=np.int64)
        src, dst = f.src[m], f.dst[m]
        keep = np.r_[True, src[1:] != src[:-1]] if src.size else np.zeros(0, dtype=bool)
        first[src[keep]] = dst[keep]
        depth = np.full(f.num_nodes, -1, dtype=np.int64)
        depth[self.targets[t]] = 0
        todo = first >= 0
        while todo.any():
            ready = todo & (depth[np.maximum(first, 0)] >= 0)
            if not ready.any():
                break
            depth[ready] = depth[first[ready]] + 1
            todo &= ~ready
        return depth


def fnv_words(*words: np.ndarray) -> np.ndarray:
    """:func:`traces.infra.hashing.fnv1a_64` of the words (each masked to 32 bits), elementwise."""
    from traces.infra.hashing import FNV_OFFSET_64, FNV_PRIME_64

    shape = np.broadcast_shapes(*(np.shape(w) for w in words))
    h = np.full(shape, FNV_OFFSET_64, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME_64)
    with np.errstate(over="ignore"):
        for w in words:
            h = (h ^ (np.asarray(w, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint64)) * prime
    return h
