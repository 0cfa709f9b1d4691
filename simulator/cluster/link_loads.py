"""Copies per directed link from sparse per-pair counts, without per-pair route tables.

A layer's traffic is a list of (endpoint pair, copies).  Its load on every directed link is
linear in the copies, so it is computed from the pairs that carry traffic only:

* ``spray`` (every switch splits evenly over its equal-cost next hops): the copies towards
  one target split at a node the same way whatever their source, so all sources are pushed
  through each target's equal-cost graph at once, level by level (:class:`SprayPropagator`):
  work and memory grow with targets x links of the fabric, not with pairs.
* ``hash`` on pooled NICs: the route table's middle routes (one hashed path per server pair).
* anything else (``ecmp``; ``hash`` on per-GPU NICs): the routes of the pairs that carry
  traffic, each built once and kept (:meth:`MultipathRoutes.hops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulator.cluster.equal_cost import EqualCostDag

if TYPE_CHECKING:
    from simulator.cluster.multipath import MultipathRoutes


@dataclass(frozen=True, eq=False)
class SprayPropagator:
    """Every (target, next-hop edge) of an equal-cost graph, ordered by the edge's depth.

    State ``t * nodes + u`` is "copies at node u heading for target t"; an edge carries the
    state's copies divided by the node's next-hop count to state ``t * nodes + v``.
    """

    num_nodes: int
    num_targets: int
    state_src: np.ndarray  # [entries]
    state_dst: np.ndarray
    link: np.ndarray  # directed link id
    share: np.ndarray  # 1 / next hops at the edge's source
    levels: np.ndarray  # entry offsets of each depth, deepest first

    @classmethod
    def build(cls, dag: EqualCostDag) -> SprayPropagator:
        f = dag.fabric
        n = f.num_nodes
        parts: list[tuple[np.ndarray, ...]] = []
        for t in range(len(dag.targets)):
            m = dag.mask(t)
            depth = dag.depth(t, m)
            count = np.bincount(f.src[m], minlength=n)
            src, dst = f.src[m], f.dst[m]
            parts.append((t * n + src, t * n + dst, f.link[m], 1.0 / count[src], depth[src]))
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return cls(n, 0, z, z, z, np.zeros(0), np.zeros(1, dtype=np.int64))
        cat = [np.concatenate(c) for c in zip(*parts, strict=True)]
        order = np.argsort(-cat[4], kind="stable")
        depth = cat[4][order]
        top = int(depth[0]) if depth.size else 0
        levels = np.r_[np.searchsorted(-depth, -np.arange(top, 0, -1), side="left"), depth.size]
        return cls(n, len(dag.targets), cat[0][order], cat[1][order], cat[2][order],
                   cat[3][order], levels)

    def push(self, node: np.ndarray, target: np.ndarray, copies: np.ndarray,
             num_links: int) -> np.ndarray:
        """Copies on every directed link when ``copies[i]`` start at ``node[i]`` heading for
        target position ``target[i]``."""
        size = self.num_nodes * self.num_targets
        at = np.bincount(target * self.num_nodes + node, weights=copies,
                         minlength=size).astype(np.float64)
        out = np.zeros(num_links)
        lv = self.levels
        for lo, hi in zip(lv[:-1].tolist(), lv[1:].tolist(), strict=True):
            if lo == hi:
                continue
            flow = at[self.state_src[lo:hi]] * self.share[lo:hi]
            out += np.bincount(self.link[lo:hi], weights=flow, minlength=num_links)
            at += np.bincount(self.state_dst[lo:hi], weights=flow, minlength=size)
        return out


def per_pair_link_copies(mp: MultipathRoutes, pairs: np.ndarray,
                         copies: np.ndarray) -> np.ndarray:
    """Copies per directed link from the routes of the given endpoint pairs, one by one."""
    n = mp.endpoints.count
    links, weights = [], []
    for p, c in zip(pairs.tolist(), copies.tolist(), strict=True):
        for ids, share in mp.hops(*divmod(p, n)):
            links.append(ids)
            weights.append(share * c)
    if not links:
        return np.zeros(mp.num_directed_links)
    return np.bincount(np.concatenate(links), weights=np.concatenate(weights),
                       minlength=mp.num_directed_links)


def middle_link_copies(routes_offsets: np.ndarray, routes_links: np.ndarray,
                       pairs: np.ndarray, copies: np.ndarray, num_links: int) -> np.ndarray:
    """Copies per directed link along one stored route per pair (CSR ``offsets``/``links``)."""
    lo, hi = routes_offsets[pairs], routes_offsets[pairs + 1]
    length = hi - lo
    if not length.sum():
        return np.zeros(num_links)
    start = np.repeat(lo - np.concatenate([[0], np.cumsum(length)[:-1]]), length)
    idx = start + np.arange(int(length.sum()))
    return np.bincount(routes_links[idx], weights=np.repeat(copies, length).astype(np.float64),
                       minlength=num_links)
