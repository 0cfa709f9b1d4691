"""Network endpoints and multipath routes between them (pure networkx/numpy, no simpy).

*Endpoints* are where traffic enters and leaves the network.  On a cluster whose GPUs have
their own NICs (``ClusterSpec.has_gpu_nics``: rail-optimized fabrics) every GPU is one
endpoint, its NIC link; elsewhere a server's NICs are pooled and the server node is the
endpoint.  Which endpoint a copy uses is the dispatch scheme's choice
(:mod:`simulator.traffic`).

A *route* between two endpoints on different servers is a list of hops; each hop is a set of
directed links with the share of the traffic each carries (shares of a hop sum to 1).  Routes
follow the equal-cost shortest paths of :mod:`simulator.cluster.paths` (by weight, then by link
count), so all equal-cost paths have the same length and the links at one depth form one hop.
With per-GPU NICs a route starts on the source NIC's link, crosses switches only (a server
node is never a transit hop) and ends on the destination NIC's link.

Multipath modes (``MULTIPATH_MODES``):

* ``spray``: packet spraying / adaptive routing: every switch splits the traffic evenly over
  its equal-cost next hops, so each link carries the product of 1/(next hops) along the way
  (the balance adaptive routing reaches on a symmetric fabric).  The default: InfiniBand
  adaptive routing and Ethernet packet spraying are what RDMA fabrics for EP run.
* ``ecmp``: per-flow ECMP: an endpoint pair's traffic travels as ``flows_per_pair`` flows per
  GPU pair behind it (queue pairs / channels), each hashed at every switch to one next hop;
  the bytes are split evenly over the flows, so hash collisions load some paths more.
* ``hash``: one route per endpoint pair, hashed at every switch (per-pair ECMP hashing; the
  only model before multipath, kept as a named mode).

Storage: :class:`MultipathRoutes` computes a pair's route on first use and keeps it;
:meth:`MultipathRoutes.link_copies` turns sparse per-pair copies into copies per link without
listing routes (:mod:`simulator.cluster.link_loads`); :meth:`MultipathRoutes.entries` lists
every (pair, link, share), for small clusters and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cluster.equal_cost import EqualCostDag, Fabric, directed_link_id, fabric_of
from simulator.cluster.link_loads import (
    HashedWalker,
    SprayPropagator,
    middle_link_copies,
    spray_signature_entries,
)
from simulator.cluster.multipath_modes import check_multipath
from simulator.cluster.paths import RouteTable, _stable_hash
from simulator.cluster.share_units import ecmp_denominator
from traces.infra.errors import InputError

_WALKERS_PER_PASS = 1 << 20  # hashed flows walked at once (memory of one pass)

Hop = tuple[np.ndarray, np.ndarray]  # (directed link ids, shares)


@dataclass(frozen=True, eq=False)
class Endpoints:
    """Network endpoints of a cluster: per-GPU NICs, or one pooled endpoint per server."""

    per_gpu: bool
    gpu_endpoint: np.ndarray  # [gpus] the GPU's own endpoint
    endpoint_server: np.ndarray  # [endpoints]
    local_index: np.ndarray  # [gpus] index of the GPU inside its server
    server_gpus: tuple[np.ndarray, ...]  # GPU indices of every server, in order

    @property
    def count(self) -> int:
        return int(self.endpoint_server.shape[0])

    def endpoint_gpu(self, endpoints: np.ndarray) -> np.ndarray:
        """The GPU owning each per-GPU endpoint (per-GPU NICs only)."""
        if not self.per_gpu:
            raise ValueError("pooled endpoints belong to no single GPU")
        return np.asarray(endpoints, dtype=np.int64)

    def of_local(self, servers: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Endpoint of the GPU with local index ``local`` (modulo the server's GPUs) on each of
        ``servers``: that GPU's NIC, or the pooled server endpoint."""
        if not self.per_gpu:
            return np.asarray(servers, dtype=np.int64)
        sizes = np.array([len(x) for x in self.server_gpus], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = np.concatenate(self.server_gpus)
        return flat[starts[servers] + np.asarray(local) % sizes[servers]]


def endpoints_of(routes: RouteTable) -> Endpoints:
    cluster = routes.cluster
    gs = cluster.gpu_server
    server_gpus = tuple(np.flatnonzero(gs == s) for s in range(cluster.num_servers))
    local = np.zeros(cluster.num_gpus, dtype=np.int64)
    for members in server_gpus:
        local[members] = np.arange(len(members))
    if cluster.has_gpu_nics:
        return Endpoints(True, np.arange(cluster.num_gpus), gs.copy(), local, server_gpus)
    return Endpoints(False, gs.copy(), np.arange(cluster.num_servers), local, server_gpus)


class MultipathRoutes:
    """Routes between endpoints for one multipath mode (module docstring)."""

    def __init__(self, routes: RouteTable, mode: str, flows_per_pair: int | None = None) -> None:
        self.flows = check_multipath(mode, flows_per_pair)
        self.routes = routes
        self.mode = mode
        self.endpoints = endpoints_of(routes)
        self.cluster = routes.cluster
        self.num_directed_links = 2 * len(self.cluster.links)
        self._node_index = {name: i for i, name in enumerate(self.cluster.graph.nodes)}
        self._cache: dict[int, tuple[Hop, ...]] = {}
        self._switch_next_hops: dict[str, dict[str, tuple[str, ...]]] = {}

    def hops(self, e: int, f: int) -> tuple[Hop, ...]:
        """The route from endpoint e to endpoint f (on another server), hop by hop."""
        p = e * self.endpoints.count + f
        got = self._cache.get(p)
        if got is None:
            got = self._cache[p] = self._route(e, f)
        return got

    @cached_property
    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pair e*E+f, hop index, directed link, share) of every route between endpoints of
        different servers."""
        ep = self.endpoints
        pairs, depths, links, shares = [], [], [], []
        for e in range(ep.count):
            for f in range(ep.count):
                if ep.endpoint_server[e] == ep.endpoint_server[f]:
                    continue
                for d, (ids, sh) in enumerate(self.hops(e, f)):
                    pairs.append(np.full(len(ids), e * ep.count + f, dtype=np.int64))
                    depths.append(np.full(len(ids), d, dtype=np.int64))
                    links.append(ids)
                    shares.append(sh)
        if not pairs:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z, np.zeros(0)
        return (
            np.concatenate(pairs), np.concatenate(depths), np.concatenate(links),
            np.concatenate(shares),
        )

    @cached_property
    def share_denominator(self) -> int | None:
        """Every route share is a whole multiple of 1/this (``None``: no such denominator
        within :data:`simulator.cluster.share_units.MAX_SHARE_DENOMINATOR`)."""
        if self.mode == "hash":
            return 1
        if self.mode == "ecmp":
            if self.endpoints.per_gpu:
                return ecmp_denominator([self.flows])
            sizes = sorted({len(g) for g in self.endpoints.server_gpus})
            return ecmp_denominator([self.flows * a * b for a in sizes for b in sizes])
        if self.endpoints.per_gpu:
            return self._switch_dag[1].denominator
        return self._spray_servers.denominator

    def link_copies(self, pairs: np.ndarray, copies: np.ndarray) -> np.ndarray:
        """Copies on every directed link from ``copies[i]`` on endpoint pair ``pairs[i]``
        (e*E+f, endpoints on different servers; see :mod:`simulator.cluster.link_loads`).
        Copies in whole units of 1/:attr:`share_denominator` give whole units, exactly."""
        n_links = self.num_directed_links
        pairs = np.asarray(pairs, dtype=np.int64)
        copies = np.asarray(copies, dtype=np.float64)
        ep = self.endpoints
        e, f = np.divmod(pairs, ep.count)
        if self.mode == "hash" and not ep.per_gpu:
            r = self.routes
            return middle_link_copies(r.middle_offsets, r.middle_links, pairs, copies, n_links)
        if self.mode != "spray":
            keys, where = np.unique(pairs, return_inverse=True)
            total = np.bincount(where.ravel(), weights=copies, minlength=keys.size)
            out = self._hashed_link_copies(keys, total)
            return out if self.share_denominator is None else np.rint(out)
        if not ep.per_gpu:  # pooled: the leaf link up, the core's equal-cost graph, down
            net = self.routes.net
            out = self._leaf_copies(e, f, copies)
            return out + self._spray_servers.push(net.attach[e], net.target[f], copies, n_links)
        # per-GPU NICs: the NIC link up, the switches' equal-cost graph, the NIC link down
        sw_a, sw_b = self._nic_switch[e], self._nic_switch[f]
        out = np.bincount(self._nic_up[e], weights=copies, minlength=n_links).astype(np.float64)
        out += np.bincount(self._nic_down[f], weights=copies, minlength=n_links)
        far = sw_a != sw_b
        dag, prop = self._switch_dag
        pos = np.searchsorted(dag.targets, sw_b[far])
        return out + prop.push(sw_a[far], pos, copies[far], n_links)

    def class_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Entries whose per-link signatures give the same
        :func:`simulator.cluster.link_load_classes.link_classes` as
        :attr:`entries`: with ``spray`` one pair per (attachment, attachment) or (NIC switch,
        NIC switch) of the core instead of every endpoint pair behind them (the links a pair
        of endpoints adds on its own, leaf and NIC links, are classes of their own either
        way); other modes list every endpoint pair."""
        if self.mode != "spray":
            return self.entries
        if not self.endpoints.per_gpu:
            prop = self._spray_servers
            sources = self.routes.net.core.targets
            return spray_signature_entries(prop, sources, ~np.eye(len(sources), dtype=bool))
        dag, prop = self._switch_dag
        ep = self.endpoints
        # a switch pair carries traffic when NICs of two different servers sit on its ends
        on = np.zeros((len(dag.targets), self.cluster.num_servers), dtype=bool)
        on[np.searchsorted(dag.targets, self._nic_switch), ep.endpoint_server] = True
        per = on.sum(axis=1)
        valid = (per[:, None] + per[None, :] - on.astype(np.int64) @ on.T.astype(np.int64)) > 1
        np.fill_diagonal(valid, False)
        return spray_signature_entries(prop, dag.targets, valid)

    def _leaf_copies(self, e: np.ndarray, f: np.ndarray, copies: np.ndarray) -> np.ndarray:
        """Pooled endpoints: copies on the leaf servers' own links, up at e and down at f."""
        net = self.routes.net
        out = np.zeros(self.num_directed_links)
        for ends, links in ((e, net.up), (f, net.down)):
            per_server = np.bincount(ends, weights=copies, minlength=self.endpoints.count)
            leaf = links >= 0  # one link per leaf server: distinct ids
            out[links[leaf]] += per_server[leaf]
        return out

    def _hashed_link_copies(self, pairs: np.ndarray, copies: np.ndarray) -> np.ndarray:
        """Copies per directed link along the hashed routes (``hash``: one per pair;
        ``ecmp``: every flow of the pair with 1/flows of its copies), all pairs at once: the
        NIC or leaf links, then every flow walked through the switches by
        :class:`simulator.cluster.link_loads.HashedWalker` (the picks :meth:`hops` makes)."""
        ep = self.endpoints
        n_links = self.num_directed_links
        e, f = np.divmod(pairs, ep.count)
        if ep.per_gpu:
            out = np.bincount(self._nic_up[e], weights=copies, minlength=n_links).astype(
                np.float64)
            out += np.bincount(self._nic_down[f], weights=copies, minlength=n_links)
            dag, _ = self._switch_dag
            start = self._nic_switch[e]
            target = np.searchsorted(dag.targets, self._nic_switch[f])
            walker = self._switch_walker
            flows = np.full(pairs.size, self.flows, dtype=np.int64)
        else:
            net = self.routes.net
            out = self._leaf_copies(e, f, copies)
            start, target, walker = net.attach[e], net.target[f], self._core_walker
            flows = np.full(pairs.size, 1, dtype=np.int64)
            if self.mode == "ecmp":  # the flows of every GPU pair behind the server pair
                sizes = np.array([len(g) for g in ep.server_gpus], dtype=np.int64)
                flows = self.flows * sizes[e] * sizes[f]
        # walkers (pair, flow q) in slices of about _WALKERS_PER_PASS
        ends = np.cumsum(flows)
        cuts = np.searchsorted(ends, np.arange(_WALKERS_PER_PASS, int(ends[-1]) if ends.size
                                               else 0, _WALKERS_PER_PASS), side="right")
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, pairs.size].tolist(),
                          strict=True):
            if lo == hi:
                continue
            fl = flows[lo:hi]
            rep = lo + np.repeat(np.arange(hi - lo), fl)
            q = np.arange(rep.size) - np.repeat(np.cumsum(fl) - fl, fl)
            words = (e[rep], f[rep], q) if self.mode == "ecmp" else (e[rep], f[rep])
            out += walker.link_copies(start[rep], target[rep], words,
                                      copies[rep] / flows[rep], n_links)
        return out

    @cached_property
    def _core_walker(self) -> HashedWalker:
        return HashedWalker.build(self.routes.net.core)

    @cached_property
    def _switch_walker(self) -> HashedWalker:
        return HashedWalker.build(self._switch_dag[0])

    @cached_property
    def _spray_servers(self) -> SprayPropagator:
        return SprayPropagator.build(self.routes.net.core)

    @cached_property
    def _switch_fabric(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-GPU-NIC endpoints: (switch at the NIC's far end as a switch-fabric index, NIC
        link up, NIC link down), [endpoints]."""
        cluster = self.cluster
        fab = self._switches
        sw, up, down = [], [], []
        for e in range(self.endpoints.count):
            lk_i = int(cluster.gpu_nic_link[e])
            s = cluster.servers[self.endpoints.endpoint_server[e]]
            other = _other_end(cluster.links[lk_i], s)
            sw.append(fab.index[other])
            up.append(self._directed(s, other))
            down.append(self._directed(other, s))
        return (np.array(sw, dtype=np.int64), np.array(up, dtype=np.int64),
                np.array(down, dtype=np.int64))

    @property
    def _nic_switch(self) -> np.ndarray:
        return self._switch_fabric[0]

    @property
    def _nic_up(self) -> np.ndarray:
        return self._switch_fabric[1]

    @property
    def _nic_down(self) -> np.ndarray:
        return self._switch_fabric[2]

    @cached_property
    def _switches(self) -> Fabric:
        return fabric_of(self.cluster, {n.name for n in self.cluster.nodes if n.kind == "switch"})

    @cached_property
    def _switch_dag(self) -> tuple[EqualCostDag, SprayPropagator]:
        """The equal-cost graph over switches towards every switch a NIC reaches."""
        dag = EqualCostDag.build(self._switches, np.unique(self._nic_switch))
        return dag, SprayPropagator.build(dag)

    # --- route construction ------------------------------------------------------------

    def _directed(self, u: str, v: str) -> int:
        link = int(self.cluster.graph.edges[u, v]["index"])
        return directed_link_id(link, self.cluster.links[link].a == u)

    def _route(self, e: int, f: int) -> tuple[Hop, ...]:
        ep = self.endpoints
        cluster = self.cluster
        if ep.endpoint_server[e] == ep.endpoint_server[f]:
            raise ValueError("no network route between endpoints of one server")
        one = np.ones(1)
        if not ep.per_gpu:
            src, dst = cluster.servers[e], cluster.servers[f]
            nh = self.routes.next_hops[f]
            return tuple(self._split(src, dst, nh, (e, f), self.flows))
        first = int(cluster.gpu_nic_link[e])
        last = int(cluster.gpu_nic_link[f])
        s_src = cluster.servers[ep.endpoint_server[e]]
        s_dst = cluster.servers[ep.endpoint_server[f]]
        sw_a = _other_end(cluster.links[first], s_src)
        sw_b = _other_end(cluster.links[last], s_dst)
        head = (np.array([self._directed(s_src, sw_a)]), one)
        tail = (np.array([self._directed(sw_b, s_dst)]), one)
        # flows of a per-GPU-NIC pair: one GPU pair behind it
        middle = self._split(sw_a, sw_b, self._toward_switch(sw_b), (e, f), self.flows)
        return (head, *middle, tail)

    def _split(
        self, src: str, dst: str, nh: dict[str, tuple[str, ...]], key: tuple[int, int],
        flows_per_gpu_pair: int,
    ) -> list[Hop]:
        """Hops from node src to node dst along the equal-cost DAG ``nh`` under the mode."""
        if src == dst:
            return []
        if src not in nh:
            raise InputError(f"cluster {self.cluster.name!r}: {src!r} cannot reach {dst!r}")
        idx = self._node_index
        if self.mode == "spray":
            hops: list[Hop] = []
            at = {src: 1.0}
            while dst not in at:
                nxt: dict[str, float] = {}
                ids, shares = [], []
                for u in sorted(at):
                    share = at[u] / len(nh[u])
                    for v in nh[u]:
                        ids.append(self._directed(u, v))
                        shares.append(share)
                        nxt[v] = nxt.get(v, 0.0) + share
                hops.append((np.array(ids, dtype=np.int64), np.array(shares)))
                at = nxt
            return hops
        flows = 1
        if self.mode == "ecmp":
            flows = flows_per_gpu_pair * self._gpu_pairs(key)
        counts: list[dict[int, int]] = []
        for q in range(flows):
            u, depth = src, 0
            while u != dst:
                cands = nh[u]
                salt = (*key, idx[u]) if self.mode == "hash" else (*key, q, idx[u])
                v = cands[_stable_hash(*salt) % len(cands)]
                if depth == len(counts):
                    counts.append({})
                d = self._directed(u, v)
                counts[depth][d] = counts[depth].get(d, 0) + 1
                u, depth = v, depth + 1
        return [
            (np.array(sorted(c), dtype=np.int64), np.array([c[x] / flows for x in sorted(c)]))
            for c in counts
        ]

    def _gpu_pairs(self, key: tuple[int, int]) -> int:
        """GPU pairs behind an endpoint pair (pooled: GPUs of one server x of the other)."""
        ep = self.endpoints
        if ep.per_gpu:
            return 1
        return len(ep.server_gpus[key[0]]) * len(ep.server_gpus[key[1]])

    def _toward_switch(self, target: str) -> dict[str, tuple[str, ...]]:
        """Equal-cost next hops towards switch ``target`` over switches only."""
        got = self._switch_next_hops.get(target)
        if got is not None:
            return got
        dag, _ = self._switch_dag
        t = int(np.searchsorted(dag.targets, self._switches.index[target]))
        nh = self._switch_next_hops[target] = dag.next_hops(t)
        return nh


def _other_end(link: object, node: str) -> str:
    a, b = link.a, link.b  # type: ignore[attr-defined]
    return b if a == node else a

