"""Copies per directed link from sparse per-pair counts, without per-pair route tables.

A layer's traffic is a list of (endpoint pair, copies).  Its load on every directed link is
linear in the copies, so it is computed from the pairs that carry traffic only:

* ``spray`` (every switch splits evenly over its equal-cost next hops): the copies towards
  one target split at a node the same way whatever their source, so all sources are pushed
  through each target's equal-cost graph at once, level by level (:class:`SprayPropagator`):
  work and memory grow with targets x links of the fabric, not with pairs.
* ``hash`` on pooled NICs: the route table's middle routes (one hashed path per server pair).
* anything else (``ecmp``; ``hash`` on per-GPU NICs): every flow of the pairs that carry
  traffic walked through the switches at once, one hashed pick per node
  (:class:`HashedWalker`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cluster.equal_cost import EqualCostDag, fnv_words
from simulator.cluster.share_units import spray_denominator


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
    fanout: np.ndarray  # next hops at the edge's source
    levels: np.ndarray  # entry offsets of each depth, deepest first

    @cached_property
    def denominator(self) -> int | None:
        """Every share is a multiple of 1/denominator (:mod:`simulator.cluster.share_units`)."""
        return spray_denominator(self.state_src, self.state_dst, self.fanout, self.levels,
                                 self.num_nodes * self.num_targets)

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
            parts.append((t * n + src, t * n + dst, f.link[m], count[src], depth[src]))
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return cls(n, 0, z, z, z, np.zeros(0), z, np.zeros(1, dtype=np.int64))
        cat = [np.concatenate(c) for c in zip(*parts, strict=True)]
        order = np.argsort(-cat[4], kind="stable")
        depth = cat[4][order]
        fanout = cat[3][order]
        top = int(depth[0]) if depth.size else 0
        levels = np.r_[np.searchsorted(-depth, -np.arange(top, 0, -1), side="left"), depth.size]
        return cls(n, len(dag.targets), cat[0][order], cat[1][order], cat[2][order],
                   1.0 / fanout, fanout, levels)

    def push(self, node: np.ndarray, target: np.ndarray, copies: np.ndarray,
             num_links: int) -> np.ndarray:
        """Copies on every directed link when ``copies[i]`` start at ``node[i]`` heading for
        target position ``target[i]``.  Copies in whole units of 1/:attr:`denominator` give
        whole units, exactly: each edge divides a multiple of its fan-out by the fan-out."""
        size = self.num_nodes * self.num_targets
        at = np.bincount(target * self.num_nodes + node, weights=copies,
                         minlength=size).astype(np.float64)
        out = np.zeros(num_links)
        lv = self.levels
        for lo, hi in zip(lv[:-1].tolist(), lv[1:].tolist(), strict=True):
            if lo == hi:
                continue
            flow = at[self.state_src[lo:hi]] / self.fanout[lo:hi]
            out += np.bincount(self.link[lo:hi], weights=flow, minlength=num_links)
            at += np.bincount(self.state_dst[lo:hi], weights=flow, minlength=size)
        return out


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


def spray_signature_entries(
    prop: SprayPropagator, sources: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pair, depth, link, share) of every route from each of ``sources`` (core nodes) to
    each target of ``prop``: pair = source position x targets + target position; depth: the
    link's distance (in links) from the target.  ``valid[a, b]`` (default all): which
    (source, target) pairs carry traffic at all.  Used to find links that always carry the
    same load (:func:`simulator.cluster.link_load_classes.link_classes`), with one pair per
    (source, target) instead of one per endpoint pair behind them."""
    n, nt = prop.num_nodes, prop.num_targets
    ns = len(sources)
    tgt = prop.state_src // n
    out: list[tuple[np.ndarray, ...]] = []
    lv = prop.levels
    depth_of = np.zeros(prop.state_src.size, dtype=np.int64)
    for d, (lo, hi) in enumerate(zip(lv[:-1].tolist(), lv[1:].tolist(), strict=True)):
        depth_of[lo:hi] = len(lv) - 1 - d
    for t in range(nt):
        sel = np.flatnonzero(tgt == t)
        if not sel.size:
            continue
        at = np.zeros((ns, n))
        ok = np.ones(ns, dtype=bool) if valid is None else valid[:, t].copy()
        at[np.arange(ns)[ok], sources[ok]] = 1.0
        for dep in np.unique(depth_of[sel])[::-1].tolist():
            e = sel[depth_of[sel] == dep]
            u, v = prop.state_src[e] % n, prop.state_dst[e] % n
            flow = at[:, u] * prop.share[e]
            a, j = np.nonzero(flow)
            out.append((a * nt + t, np.full(a.size, dep), prop.link[e[j]], flow[a, j]))
            np.add.at(at.T, v, flow.T)
    if not out:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, np.zeros(0)
    cat = [np.concatenate(c) for c in zip(*out, strict=True)]
    return cat[0], cat[1], cat[2], cat[3]


@dataclass(frozen=True, eq=False)
class HashedWalker:
    """Hashed next-hop picks over an equal-cost graph, for many walkers at once.

    A walker at node u heading for target t takes the next hop number
    ``fnv(words..., salt[u]) mod (next hops of u)`` in name order: the rule of
    :meth:`simulator.cluster.multipath.MultipathRoutes.hops` for ``hash`` and ``ecmp`` (and of
    the route table's hashed middles), without walking pairs one by one in Python.
    """

    dag: EqualCostDag
    cumulative: np.ndarray  # per target, the running count of next-hop edges (CSR by source)

    @classmethod
    def build(cls, dag: EqualCostDag) -> HashedWalker:
        width = dag.fabric.src.size + 1
        rows = [np.concatenate([[0], np.cumsum(dag.mask(t))]) + t * width
                for t in range(len(dag.targets))]
        cm = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return cls(dag, cm)

    def link_copies(self, start: np.ndarray, target: np.ndarray,
                    words: tuple[np.ndarray, ...], copies: np.ndarray,
                    num_links: int) -> np.ndarray:
        """Copies on every directed link when walker i carries ``copies[i]`` from node
        ``start[i]`` to the node at target position ``target[i]``, salted by ``words``."""
        f = self.dag.fabric
        out = np.zeros(num_links)
        u = np.asarray(start, dtype=np.int64)
        t = np.asarray(target, dtype=np.int64)
        goal = self.dag.targets[t]
        w = np.asarray(copies, dtype=np.float64)
        ws = tuple(np.asarray(x, dtype=np.int64) for x in words)
        going = u != goal
        while going.any():
            u, t, goal, w = u[going], t[going], goal[going], w[going]
            ws = tuple(x[going] for x in ws)
            e = self.next_edges(u, t, ws)
            out += np.bincount(f.link[e], weights=w, minlength=num_links)
            u = f.dst[e]
            going = u != goal
        return out

    def next_edges(self, u: np.ndarray, t: np.ndarray, words: tuple[np.ndarray, ...]
                   ) -> np.ndarray:
        """The fabric edge each walker at node ``u[i]`` heading for target position ``t[i]``
        takes next, picked by the hash of ``words`` (one value per walker each) and u's salt."""
        f = self.dag.fabric
        base = t * (f.src.size + 1)
        lo = self.cumulative[base + f.offsets[u]]
        count = self.cumulative[base + f.offsets[u + 1]] - lo
        pick = fnv_words(*words, f.salt[u]) % count.astype(np.uint64)
        edges: np.ndarray = np.searchsorted(
            self.cumulative, lo + pick.astype(np.int64) + 1, side="left") - base - 1
        return edges
