"""The analytic counter: bytes per directed link and hops per token, vectorised, no events.

It shares the route table, the multipath routes, the origin/host rules and the dispatch
scheme's copy and endpoint rules with the event engine, and counts copies per link its own way
(per-pair route counts or de-duplication keys summed onto uplinks, endpoint routes weighted by
their multipath shares, and downlinks), without the engine's stage messages, trains or link
classes, so it is the independent check of the simulator's byte accounting, and the fast mode
for huge traces.  Split modes put fractional shares of a copy on a link; the byte columns are
the exact sums rounded to whole bytes.  The bandwidth lower bound of a phase is the time its
busiest link direction needs to carry that phase's bytes: no schedule can do better.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import RouteTable
from simulator.dispatch import check_scheme, dedup_keys, route_pairs, server_pairs
from simulator.microbatches import by_tokens
from simulator.summaries import link_table, tier_bytes
from simulator.traffic import (
    SHARED_EXPERTS_NOTE,
    CopyTally,
    TrafficConfig,
    pair_counts,
    remote_copies,
    resolve_hosts_layer,
    resolve_origins,
    validate_layout,
)
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class AnalyticResult:
    """Counts over a whole trace."""

    dispatch_link_bytes: np.ndarray  # [directed links] int64
    combine_link_bytes: np.ndarray  # [directed links] int64
    num_tokens: int
    hops_per_token: float  # the paper's metric: dispatch + combine distance per token
    network_bytes: int  # bytes put on the network (links from a server into a switch)
    lower_bound_s: pd.DataFrame  # per (microbatch, layer, phase): max link bytes / bandwidth
    summary: dict[str, Any]
    links: pd.DataFrame  # per link direction: dispatch/combine/total bytes

    @property
    def link_bytes(self) -> np.ndarray:
        """Dispatch plus combine bytes per link direction (the sum rounded once)."""
        return self.links["bytes"].to_numpy()


def link_route_counts(routes: RouteTable, counts: np.ndarray) -> np.ndarray:
    """Routes crossing each directed link given per-pair route counts [gpus, gpus]."""
    w = counts.ravel()[routes.pair_of_entry]
    out = np.bincount(routes.pair_links, weights=w, minlength=2 * len(routes.cluster.links))
    return np.rint(out).astype(np.int64)


@dataclass(frozen=True, eq=False)
class LayerCopies:
    """One layer's dispatch copies, before any link: per GPU the copies that leave over its
    uplink (``up``) and arrive over its downlink (``down``), and per endpoint pair the copies
    that cross the network (``mid`` [E, E]).  Combine is the mirror image."""

    up: np.ndarray
    mid: np.ndarray
    down: np.ndarray


class _Counter:
    """Copies per directed link of one layer, both phases.

    Every copy is counted on the links it crosses: its source GPU's uplink, the route between
    its endpoints (split by the multipath shares) when it changes servers, its destination's
    downlink; combine counts the same copies the reverse way.  :meth:`copies` depends on the
    GPUs, servers and endpoints only, :meth:`links` on the routes.
    """

    def __init__(self, routes: RouteTable, config: TrafficConfig,
                 multipath: MultipathRoutes | None = None) -> None:
        self.routes = routes
        self.scheme = config.dispatch
        self.multipath = multipath or MultipathRoutes(routes, config.multipath,
                                                      config.flows_per_pair)
        self.ep = self.multipath.endpoints
        check_scheme(self.scheme, self.ep, routes.cluster.name)
        self.nlinks = 2 * len(routes.cluster.links)
        self.gs = routes.cluster.gpu_server

    def _per_gpu(self, *gpus: np.ndarray) -> np.ndarray:
        g = self.routes.num_gpus
        return sum((np.bincount(x, minlength=g) for x in gpus), np.zeros(g)).astype(np.float64)

    def _pairs(self, pairs: np.ndarray, w: Any = None) -> np.ndarray:
        n = self.ep.count
        return np.bincount(pairs, weights=w, minlength=n * n).reshape(n, n)

    def copies(self, origins: np.ndarray, hosts: np.ndarray) -> LayerCopies:
        if self.scheme == "deepep-normal":
            keys = dedup_keys(origins, hosts, self.gs)
            tt, hh = keys.gpu
            oo = origins[tt]
            local = self.gs[hh] == self.gs[oo]
            st, ss = keys.server
            so = origins[st]
            return LayerCopies(self._per_gpu(oo[local], so),
                               self._pairs(server_pairs(so, ss, self.ep)), self._per_gpu(hh))
        g = self.routes.num_gpus
        c = pair_counts(origins, hosts, g)
        np.fill_diagonal(c, 0)
        a, b = np.nonzero(c)
        w = c[a, b]
        remote = self.gs[a] != self.gs[b]
        mid = self._pairs(route_pairs(self.scheme, a[remote], b[remote], self.gs, self.ep),
                          w[remote])
        return LayerCopies(c.sum(axis=1).astype(np.float64), mid,
                           c.sum(axis=0).astype(np.float64))

    def links(self, lc: LayerCopies) -> tuple[np.ndarray, np.ndarray]:
        d, c = self.links_many([lc])
        return d[0], c[0]

    def links_many(self, lcs: Sequence[LayerCopies]) -> tuple[np.ndarray, np.ndarray]:
        """Dispatch and combine copies per directed link of several layers, [layers, links]."""
        r, mp = self.routes, self.multipath
        up = np.stack([lc.up for lc in lcs])
        down = np.stack([lc.down for lc in lcs])
        mid = np.stack([lc.mid for lc in lcs])

        def at(ids: np.ndarray, w: np.ndarray) -> np.ndarray:
            out = np.zeros((len(lcs), self.nlinks))
            out[:, ids] = w  # every GPU has its own uplink and downlink
            return out

        dispatch = at(r.gpu_uplink, up) + mp.link_copies_many(mid) + at(r.gpu_downlink, down)
        combine = (at(r.gpu_uplink, down) + mp.link_copies_many(mid.transpose(0, 2, 1))
                   + at(r.gpu_downlink, up))
        return dispatch, combine

    def count(self, origins: np.ndarray, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.links(self.copies(origins, hosts))


def count_traffic(
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: TrafficConfig | None = None,
    microbatch_tokens: int | None = None,
) -> AnalyticResult:
    """Count a trace's traffic for one layout; each block is one micro-batch.

    ``microbatch_tokens`` re-cuts the stream as :func:`simulator.engine.simulate` does.
    """
    return count_traffic_scenarios(blocks, [routes], expert_gpus, config, microbatch_tokens)[0]


class _Sums:
    """What one route table accumulates over the trace."""

    def __init__(self, counter: _Counter) -> None:
        self.counter = counter
        cluster = counter.routes.cluster
        nlinks = 2 * len(cluster.links)
        self.bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
        self.dispatch = np.zeros(nlinks)
        self.combine = np.zeros(nlinks)
        self.hops = 0.0
        self.tally = CopyTally()
        self.bounds: list[tuple[int, int, str, float]] = []


def count_traffic_scenarios(
    blocks: Iterable[RoutingTrace],
    routes_list: Sequence[RouteTable],
    expert_gpus: np.ndarray,
    config: TrafficConfig | None = None,
    microbatch_tokens: int | None = None,
    multipaths: Sequence[MultipathRoutes] | None = None,
) -> list[AnalyticResult]:
    """:func:`count_traffic` of one layout on each of several route tables with the same GPUs,
    servers and endpoints (a fabric and its link failures): each layer's copies are found
    once (once per distinct distance matrix where replicas pick the nearest copy) and only
    mapped onto each table's links.  ``multipaths``: the tables' multipath routes under
    ``config``, built once by a caller that counts many layouts."""
    config = config or TrafficConfig()
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    mps: Sequence[MultipathRoutes | None] = multipaths or [None] * len(routes_list)
    sums = [_Sums(_Counter(r, config, mp)) for r, mp in zip(routes_list, mps, strict=True)]
    first = sums[0].counter
    for other in sums[1:]:
        ep, ep0 = other.counter.ep, first.ep
        if not (np.array_equal(other.counter.gs, first.gs) and ep.per_gpu == ep0.per_gpu
                and np.array_equal(ep.gpu_endpoint, ep0.gpu_endpoint)):
            raise ValueError("count_traffic_scenarios: the route tables differ in GPUs,"
                             " servers or endpoints")
    # route tables that pick the same replica for every route share the layer's copies
    groups: list[list[_Sums]] = []
    for x in sums:
        d = x.counter.routes.distance
        same = next((gr for gr in groups if expert_gpus.shape[2] == 1
                     or np.array_equal(gr[0].counter.routes.distance, d)), None)
        if same is None:
            groups.append([x])
        else:
            same.append(x)
    g = first.routes.num_gpus
    gs = first.gs
    tokens = 0
    if microbatch_tokens is not None:
        blocks = by_tokens(blocks, microbatch_tokens)
    for mb, block in enumerate(blocks):
        m = block.model
        validate_layout(expert_gpus, m, g)
        db, cb = config.route_bytes(m)
        origins = resolve_origins(block, g)
        tokens += block.num_tokens
        for group in groups:
            lcs = []
            for li in range(m.num_moe_layers):
                hosts = resolve_hosts_layer(block.experts[:, li, :], origins, expert_gpus[li],
                                            group[0].counter.routes.distance)
                c = pair_counts(origins, hosts, g)
                copies = remote_copies(origins, hosts, gs)
                lcs.append(group[0].counter.copies(origins, hosts))
                for x in group:
                    x.hops += float((c * x.counter.routes.distance).sum()) * 2
                    x.tally.add(copies, block.num_tokens, db + cb)
            for x in group:
                d_copies, c_copies = x.counter.links_many(lcs)
                x.dispatch += (d_copies * db).sum(axis=0)
                x.combine += (c_copies * cb).sum(axis=0)
                d_bound = (d_copies * db / x.bandwidth).max(axis=1, initial=0.0)
                c_bound = (c_copies * cb / x.bandwidth).max(axis=1, initial=0.0)
                for li, layer in enumerate(m.moe_layer_indices):
                    x.bounds.append((mb, layer, "dispatch", float(d_bound[li])))
                    x.bounds.append((mb, layer, "combine", float(c_bound[li])))
    return [_result(x, tokens, config) for x in sums]


def _result(x: _Sums, tokens: int, config: TrafficConfig) -> AnalyticResult:
    cluster = x.counter.routes.cluster
    total = np.rint(x.dispatch + x.combine).astype(np.int64)  # rounded as the replay rounds
    dispatch = np.rint(x.dispatch).astype(np.int64)
    combine = np.rint(x.combine).astype(np.int64)
    links = link_table(cluster)
    links["dispatch_bytes"] = dispatch
    links["combine_bytes"] = combine
    links["bytes"] = total
    links["busy_lower_bound_s"] = total / x.bandwidth
    lower = pd.DataFrame(x.bounds, columns=["microbatch", "layer", "phase", "lower_bound_s"])
    by_phase = lower.groupby("phase")["lower_bound_s"].sum()
    tiers = tier_bytes(cluster, total)
    summary: dict[str, Any] = {
        "tokens": float(tokens),
        "hops_per_token": x.hops / tokens if tokens else 0.0,
        **x.tally.summary(),
        **tiers,
        "dispatch_lower_bound_s": float(by_phase.get("dispatch", 0.0)),
        "combine_lower_bound_s": float(by_phase.get("combine", 0.0)),
        "dispatch": config.dispatch,
        "multipath": config.multipath,
        "shared_experts": SHARED_EXPERTS_NOTE,
    }
    return AnalyticResult(
        dispatch_link_bytes=dispatch,
        combine_link_bytes=combine,
        num_tokens=tokens,
        hops_per_token=summary["hops_per_token"],
        network_bytes=int(tiers["network_bytes"]),
        lower_bound_s=lower,
        summary=summary,
        links=links,
    )
