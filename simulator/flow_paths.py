"""The links of flow-mode messages, and the links that can never be a bottleneck.

A message of a phase plan (:class:`simulator.dispatch.PhasePlan`) runs over GPU ``up``'s link
to its server node, the multipath route of endpoint pair ``pair`` and the server node's link
to GPU ``down`` (each if >= 0), the same hops the DES serves it on.  Links that always carry
the same load are served as one (their class,
:func:`simulator.cluster.link_load_classes.link_classes`): a flow puts its share of one
member on the class's representative.

Per path (a distinct (up, pair, down)) :class:`FlowPaths` keeps, as growing CSR arrays:

* every (link, share) it crosses: where its bytes, chunks and slowdown are counted;
* the *binding* ones: those that can limit a rate.  A route link that is never the first or
  last hop of a route cannot be overloaded when the first hops feeding it cannot: its load is
  at most sum over first-hop links a of capacity(a) x (largest share on it of a route
  starting on a); likewise for last hops.  When either bound is within its capacity the link
  is implied by the others and max-min fairness does not change without it (it depends only
  on the feasible rates), so progressive filling skips it (a non-blocking fat tree keeps only
  its access links);
* the latency of the path (per hop, the largest of the hop's links) and its pipeline fill
  per byte of the last chunk: a chunk is stored and forwarded hop by hop, so the last chunk
  of ``r`` bytes still needs ``r x (sum_h t_h - max_h t_h)`` after the bottleneck hop has
  sent it, with t_h the largest share / bandwidth of hop h (exactly the DES's time for a
  one-chunk message);
* its uncontended seconds per byte, ``max_h t_h``.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from simulator.cluster.link_load_classes import link_classes
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import RouteTable
from simulator.traffic_config import TrafficConfig
from simulator.unique import sorted_unique

IMPLIED_RTOL = 1e-9


def implied_links(
    entries: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], capacity: np.ndarray
) -> np.ndarray:
    """Mask of directed links whose capacity the first (or last) hops of the routes crossing
    them already enforce (module docstring)."""
    pair, depth, link, share = entries
    n = capacity.shape[0]
    out = np.zeros(n, dtype=bool)
    if pair.size == 0:
        return out
    last = np.zeros(int(pair.max()) + 1, dtype=np.int64)
    np.maximum.at(last, pair, depth)
    at_end = (depth == 0) | (depth == last[pair])
    edge_links = np.zeros(n, dtype=bool)
    edge_links[link[at_end]] = True
    middle = ~at_end
    bounds = []
    for anchor_depth in (np.zeros_like(last), last):
        is_anchor = depth == anchor_depth[pair]
        a_pair, a_link = pair[is_anchor], link[is_anchor]
        order = np.argsort(a_pair, kind="stable")
        a_pair, a_link = a_pair[order], a_link[order]
        lo = np.searchsorted(a_pair, pair[middle], side="left")
        hi = np.searchsorted(a_pair, pair[middle], side="right")
        reps = hi - lo
        m_link = np.repeat(link[middle], reps)
        m_share = np.repeat(share[middle], reps)
        starts = np.repeat(lo, reps)
        within = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        anchors = a_link[starts + within]
        key = anchors * n + m_link
        order = np.argsort(key, kind="stable")
        key, m_share = key[order], m_share[order]
        if key.size == 0:
            bounds.append(np.zeros(n, dtype=np.float64))
            continue
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        biggest = np.maximum.reduceat(m_share, first)
        k = key[first]
        bounds.append(
            np.bincount(k % n, weights=capacity[k // n] * biggest, minlength=n).astype(np.float64)
        )
    limit = capacity * (1.0 + IMPLIED_RTOL)
    crossed = np.zeros(n, dtype=bool)
    crossed[link[middle]] = True
    out = crossed & ~edge_links & ((bounds[0] <= limit) | (bounds[1] <= limit))
    return out


def csr_index(off: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, index into the values) of every entry of the given CSR rows."""
    lo = off[rows]
    counts = off[rows + 1] - lo
    pos = np.arange(rows.size).repeat(counts)
    # entry j of row pos[j] sits at lo + (j - the number of entries of the rows before it)
    return pos, np.arange(pos.size) + (lo - (counts.cumsum() - counts))[pos]


def gather_rows(off: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The values of the given CSR rows, concatenated."""
    lo = off[rows]
    counts = off[rows + 1] - lo
    return values[np.arange(counts.sum()) + (lo - (counts.cumsum() - counts)).repeat(counts)]


class _Csr:
    """Growing CSR arrays: per path a run of (link, share, binding)."""

    def __init__(self) -> None:
        self.off = np.zeros(1, dtype=np.int64)
        self.link = np.zeros(0, dtype=np.int64)
        self.share = np.zeros(0)
        self.binding = np.zeros(0, dtype=bool)

    def extend(self, rows: list[tuple[list[int], list[float], list[bool]]]) -> None:
        lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)
        self.off = np.concatenate([self.off, self.off[-1] + np.cumsum(lengths)])
        self.link = np.concatenate([self.link, *[np.array(r[0], dtype=np.int64) for r in rows]])
        self.share = np.concatenate([self.share, *[np.array(r[1]) for r in rows]])
        self.binding = np.concatenate([self.binding,
                                       *[np.array(r[2], dtype=bool) for r in rows]])

    def gather(self, paths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row index into ``paths``, link, share) of every entry of the given paths."""
        row, idx = csr_index(self.off, paths)
        return row, self.link[idx], self.share[idx]

    def gather_binding(
        self, paths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`gather`, and which of the entries are binding (module docstring)."""
        row, idx = csr_index(self.off, paths)
        return row, self.link[idx], self.share[idx], self.binding[idx]


class FlowPaths:
    """Paths of messages, built on first use (module docstring)."""

    def __init__(
        self, routes: RouteTable, multipath: MultipathRoutes, link_class: np.ndarray,
        link_bandwidth_bytes_per_s: np.ndarray, link_latency_s: np.ndarray,
    ) -> None:
        self.routes = routes
        self.multipath = multipath
        self.link_class = link_class
        self.link_bandwidth_bytes_per_s = link_bandwidth_bytes_per_s
        self.link_latency_s = link_latency_s
        self.implied = implied_links(multipath.entries, link_bandwidth_bytes_per_s)
        ep = multipath.endpoints.count
        self._pairs = ep * ep + 1
        self._gpus = routes.num_gpus + 1
        self._keys = np.zeros(0, dtype=np.int64)  # sorted
        self._ids = np.zeros(0, dtype=np.int64)
        self.all = _Csr()  # every link, each marked binding or not
        self.latency_s = np.zeros(0)
        self.pipe_s_per_byte = np.zeros(0)
        self.alone_s_per_byte = np.zeros(0)
        self._lock = threading.Lock()  # replays in threads of one process share the paths

    @property
    def count(self) -> int:
        return int(self.latency_s.shape[0])

    def ids(self, up: np.ndarray, pair: np.ndarray, down: np.ndarray) -> np.ndarray:
        """Path id of every message (building the paths not seen before)."""
        key = ((up + 1) * self._pairs + (pair + 1)) * self._gpus + (down + 1)
        with self._lock:
            pos = np.searchsorted(self._keys, key)
            hit = np.zeros(key.size, dtype=bool)
            inside = pos < self._keys.size
            hit[inside] = self._keys[pos[inside]] == key[inside]
            if not hit.all():
                new = sorted_unique(key[~hit])
                self._build(new)
                pos = np.searchsorted(self._keys, key)
            return self._ids[pos]

    def _build(self, keys: np.ndarray) -> None:
        first = self.count
        rows_all: list[tuple[list[int], list[float], list[bool]]] = []
        lat, pipe, alone = [], [], []
        for k in keys.tolist():
            rest, down = divmod(k, self._gpus)
            up, pair = divmod(rest, self._pairs)
            hops = self._hops(up - 1, pair - 1, down - 1)
            links: dict[int, float] = {}
            per_hop = []
            lat_s = 0.0
            for hop in hops:
                t = 0.0
                hop_lat = 0.0
                for c, share in hop:
                    links[c] = links.get(c, 0.0) + share
                    t = max(t, share / float(self.link_bandwidth_bytes_per_s[c]))
                    hop_lat = max(hop_lat, float(self.link_latency_s[c]))
                per_hop.append(t)
                lat_s += hop_lat
            ids = list(links)
            shares = [links[c] for c in ids]
            rows_all.append((ids, shares, [not self.implied[c] for c in ids]))
            lat.append(lat_s)
            pipe.append(sum(per_hop) - max(per_hop))
            alone.append(max(per_hop))
        self.all.extend(rows_all)
        self.latency_s = np.concatenate([self.latency_s, lat])
        self.pipe_s_per_byte = np.concatenate([self.pipe_s_per_byte, pipe])
        self.alone_s_per_byte = np.concatenate([self.alone_s_per_byte, alone])
        keys_all = np.concatenate([self._keys, keys])
        ids_all = np.concatenate([self._ids, np.arange(first, first + keys.size)])
        order = np.argsort(keys_all, kind="stable")
        self._keys, self._ids = keys_all[order], ids_all[order]

    def _hops(self, up: int, pair: int, down: int) -> list[list[tuple[int, float]]]:
        """(link class, share) per hop, as the DES builds a message's path."""
        routes = self.routes
        rep = self.link_class
        hops: list[list[tuple[int, float]]] = []
        if up >= 0:
            hops.append([(int(rep[int(routes.gpu_uplink[up])]), 1.0)])
        if pair >= 0:
            n = self.multipath.endpoints.count
            for ids, shares in self.multipath.hops(*divmod(pair, n)):
                hop: dict[int, float] = {}
                for x, share in zip(ids.tolist(), shares.tolist(), strict=True):
                    hop.setdefault(int(rep[x]), share)
                hops.append(list(hop.items()))
        if down >= 0:
            hops.append([(int(rep[int(routes.gpu_downlink[down])]), 1.0)])
        return hops


@dataclass(frozen=True, eq=False)
class FlowFabric:
    """What flow mode needs of one route table and traffic configuration: the multipath
    routes, the link classes, per link direction bandwidth and latency, and the paths (built
    once per process and kept: :func:`flow_fabric`)."""

    multipath: MultipathRoutes
    link_class: np.ndarray
    bandwidth_bytes_per_s: np.ndarray
    latency_s: np.ndarray
    paths: FlowPaths


_FABRICS: weakref.WeakKeyDictionary[RouteTable, dict[TrafficConfig, FlowFabric]] = (
    weakref.WeakKeyDictionary())


def flow_fabric(routes: RouteTable, traffic: TrafficConfig) -> FlowFabric:
    """The flow fabric of ``routes`` and ``traffic`` (one per process: a Dask worker keeps it
    across the micro-batches it replays)."""
    by_config = _FABRICS.setdefault(routes, {})
    got = by_config.get(traffic)
    if got is None:
        multipath = MultipathRoutes(routes, traffic.multipath, traffic.flows_per_pair)
        cl = routes.cluster.links
        bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cl], 2).astype(float)
        latency = np.repeat([lk.latency_s for lk in cl], 2).astype(float)
        cls = link_classes(multipath.class_entries(), bandwidth, latency)
        got = by_config[traffic] = FlowFabric(
            multipath, cls, bandwidth, latency,
            FlowPaths(routes, multipath, cls, bandwidth, latency))
    return got
