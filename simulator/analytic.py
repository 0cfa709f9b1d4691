"""The analytic counter: bytes per directed link and hops per token, vectorised, no events.

It shares the route table, the multipath routes, the origin/host rules and the dispatch
scheme's copy and endpoint rules with the event engine, and counts copies per link its own way
(per-pair route counts or de-duplication keys summed onto uplinks, endpoint routes weighted by
their multipath shares, and downlinks), without the engine's stage messages, trains or link
classes, so it is the independent check of the simulator's byte accounting, and the fast mode
for huge traces.  Split modes put fractional shares of a copy on a link; copies are counted in
whole units of the shares' denominator (:mod:`simulator.cluster.share_units`), so the byte
columns are the exact sums rounded half to even, whatever the order or micro-batching.
The bandwidth lower bound of a phase is the time its busiest link direction needs to carry
that phase's bytes: no schedule can do better.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.link_loads import middle_link_copies
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import RouteTable
from simulator.cluster.share_units import add_units, whole_bytes
from simulator.dispatch import check_scheme, dedup_keys, route_pairs, server_pairs
from simulator.microbatches import by_tokens
from simulator.summaries import link_table, tier_bytes
from simulator.traffic import (
    CopyTally,
    PairList,
    remote_copies,
    resolve_hosts_layer,
    validate_layout,
)
from simulator.traffic_config import SHARED_EXPERTS_NOTE, TrafficConfig
from traces.origins import resolve_origins
from traces.stats import max_over_mean
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
    gpu_routes: np.ndarray  # [MoE layers, gpus] routes each GPU serves (its compute load)
    summary: dict[str, Any]
    links: pd.DataFrame  # per link direction: dispatch/combine/total bytes

    @property
    def link_bytes(self) -> np.ndarray:
        """Dispatch plus combine bytes per link direction (the sum rounded once)."""
        return self.links["bytes"].to_numpy()


def link_route_counts(routes: RouteTable, counts: np.ndarray) -> np.ndarray:
    """Routes crossing each directed link given per-pair route counts [gpus, gpus]."""
    a, b = np.nonzero(counts)
    return pair_route_counts(routes, PairList(a, b, counts[a, b]))


def pair_route_counts(routes: RouteTable, pairs: PairList) -> np.ndarray:
    """Routes crossing each directed link along the route table's paths (one hashed path
    per server pair), from sparse per-pair counts; pairs with src == dst cross nothing."""
    p = pairs.remote()
    nlinks = 2 * len(routes.cluster.links)
    gs = routes.cluster.gpu_server
    w = p.count.astype(np.float64)
    far = gs[p.src] != gs[p.dst]
    out = np.bincount(routes.gpu_uplink[p.src], weights=w, minlength=nlinks).astype(np.float64)
    out += np.bincount(routes.gpu_downlink[p.dst], weights=w, minlength=nlinks)
    out += middle_link_copies(routes.middle_offsets, routes.middle_links,
                              gs[p.src[far]] * routes.num_servers + gs[p.dst[far]], w[far],
                              nlinks)
    return np.rint(out).astype(np.int64)


class _Counter:
    """Copies per directed link of one layer, both phases.

    Every copy is counted on the links it crosses: its source GPU's uplink, the route between
    its endpoints (split by the multipath shares) when it changes servers, its destination's
    downlink; combine counts the same copies the reverse way.
    """

    def __init__(self, routes: RouteTable, config: TrafficConfig) -> None:
        self.routes = routes
        self.scheme = config.dispatch
        self.multipath = MultipathRoutes(routes, config.multipath, config.flows_per_pair)
        self.ep = self.multipath.endpoints
        check_scheme(self.scheme, self.ep, routes.cluster.name)
        self.nlinks = 2 * len(routes.cluster.links)
        self.gs = routes.cluster.gpu_server
        # copies are counted in whole units of 1/denominator (exact sums, share_units)
        self.denominator = self.multipath.share_denominator
        self.unit = float(self.denominator or 1)

    def _at(self, ids: np.ndarray, gpus: np.ndarray | None = None, w: Any = None) -> np.ndarray:
        x = ids if gpus is None else ids[gpus]
        w = np.full(x.size, self.unit) if w is None else np.asarray(w) * self.unit
        return np.bincount(x, weights=w, minlength=self.nlinks)

    def _mid(self, pairs: np.ndarray, w: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies per link of the network copies on endpoint pairs ``pairs`` (e*E+f), both
        ways: dispatch e -> f, combine f -> e."""
        n = self.ep.count
        w = np.full(pairs.size, self.unit) if w is None else np.asarray(w) * self.unit
        back = (pairs % n) * n + pairs // n
        return self.multipath.link_copies(pairs, w), self.multipath.link_copies(back, w)

    def count(self, origins: np.ndarray, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies per link of both phases, in units of 1/:attr:`denominator` (whole numbers
        as float64 unless the denominator is ``None``)."""
        r = self.routes
        up, down = r.gpu_uplink, r.gpu_downlink
        if self.scheme == "deepep-normal":
            keys = dedup_keys(origins, hosts, self.gs)
            tt, hh = keys.gpu
            oo = origins[tt]
            local = self.gs[hh] == self.gs[oo]
            st, ss = keys.server
            so = origins[st]
            mid_d, mid_c = self._mid(server_pairs(so, ss, self.ep))
            dispatch = self._at(up, oo[local]) + self._at(up, so) + mid_d + self._at(down, hh)
            combine = self._at(up, hh) + mid_c + self._at(down, oo[local]) + self._at(down, so)
        else:
            # one copy per route whose host is not its origin: counted route by route,
            # so memory and work grow with routes, never with GPU pairs
            g = r.num_gpus
            a = np.repeat(origins, hosts.shape[1])
            b = hosts.ravel()
            moving = a != b
            a, b = a[moving], b[moving]
            remote = self.gs[a] != self.gs[b]
            mid_d, mid_c = self._mid(
                route_pairs(self.scheme, a[remote], b[remote], self.gs, self.ep)
            )
            out_gpu = np.bincount(a, minlength=g)
            in_gpu = np.bincount(b, minlength=g)
            dispatch = self._at(up, None, out_gpu) + mid_d + self._at(down, None, in_gpu)
            combine = self._at(up, None, in_gpu) + mid_c + self._at(down, None, out_gpu)
        return dispatch, combine


@dataclass(frozen=True, eq=False)
class AnalyticPart:
    """The counts of one micro-batch; :func:`combine_parts` sums them in micro-batch order,
    so a replay split over workers gives exactly the serial result."""

    microbatch: int
    dispatch: np.ndarray  # [directed links] bytes in units of 1/denominator (int64), or float
    combine: np.ndarray  # bytes when the split has no exact denominator (share_units)
    hops: float
    tokens: int
    tally: CopyTally
    bounds: list[tuple[int, int, str, float]]
    gpu_routes: np.ndarray  # [MoE layers, gpus]


_COUNTERS: weakref.WeakKeyDictionary[RouteTable, dict[TrafficConfig, _Counter]] = (
    weakref.WeakKeyDictionary())


def _counter(routes: RouteTable, config: TrafficConfig) -> _Counter:
    """One counter per route table and configuration (a worker keeps it across tasks)."""
    by_config = _COUNTERS.setdefault(routes, {})
    got = by_config.get(config)
    if got is None:
        got = by_config[config] = _Counter(routes, config)
    return got


def count_microbatch(
    mb: int, block: RoutingTrace, routes: RouteTable, expert_gpus: np.ndarray,
    config: TrafficConfig,
) -> AnalyticPart:
    """Count one micro-batch (``expert_gpus``: [layers, experts, replicas])."""
    g = routes.num_gpus
    cluster = routes.cluster
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
    counter = _counter(routes, config)
    m = block.model
    validate_layout(expert_gpus, m, g)
    db, cb = config.route_bytes(m)
    origins = resolve_origins(block, g)
    exact = counter.denominator is not None
    dispatch = np.zeros(bandwidth.size, dtype=np.int64 if exact else np.float64)
    combine = np.zeros_like(dispatch)
    hops = 0.0
    tally = CopyTally()
    bounds: list[tuple[int, int, str, float]] = []
    gpu_routes = np.zeros((m.num_moe_layers, g), dtype=np.int64)
    for li in range(m.num_moe_layers):
        hosts = resolve_hosts_layer(
            block.experts[:, li, :], origins, expert_gpus[li], routes.gpu_distance
        )
        gpu_routes[li] = np.bincount(hosts.ravel(), minlength=g)
        hops += float(routes.gpu_distance[origins[:, None], hosts].sum()) * 2
        tally.add(remote_copies(origins, hosts, cluster.gpu_server), block.num_tokens, db + cb)
        d_units, c_units = counter.count(origins, hosts)
        if exact:
            dispatch = add_units(dispatch, np.rint(d_units).astype(np.int64) * db)
            combine = add_units(combine, np.rint(c_units).astype(np.int64) * cb)
        else:
            dispatch += d_units * db
            combine += c_units * cb
        d_copies, c_copies = d_units / counter.unit, c_units / counter.unit
        layer = m.moe_layer_indices[li]
        bounds.append((mb, layer, "dispatch", float((d_copies * db / bandwidth).max())))
        bounds.append((mb, layer, "combine", float((c_copies * cb / bandwidth).max())))
    return AnalyticPart(mb, dispatch, combine, hops, block.num_tokens, tally, bounds, gpu_routes)


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
    config = config or TrafficConfig()
    layout = as_replicas(expert_gpus)
    if microbatch_tokens is not None:
        blocks = by_tokens(blocks, microbatch_tokens)
    parts = (count_microbatch(mb, b, routes, layout, config) for mb, b in enumerate(blocks))
    return combine_parts(parts, routes, config)


def as_replicas(expert_gpus: np.ndarray) -> np.ndarray:
    """A layout as [layers, experts, replicas] int64 (a 2-D layout has one replica)."""
    out = np.asarray(expert_gpus, dtype=np.int64)
    return out[:, :, None] if out.ndim == 2 else out


def combine_parts(
    parts: Iterable[AnalyticPart], routes: RouteTable, config: TrafficConfig
) -> AnalyticResult:
    """The whole trace's result from its micro-batches' parts, taken in micro-batch order."""
    cluster = routes.cluster
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
    den = _counter(routes, config).denominator
    dispatch = np.zeros(bandwidth.size, dtype=np.float64 if den is None else np.int64)
    combine = np.zeros_like(dispatch)
    hops = 0.0
    tokens = 0
    tally = CopyTally()
    bounds: list[tuple[int, int, str, float]] = []
    gpu_routes = np.zeros((0, routes.num_gpus), dtype=np.int64)
    for want, part in enumerate(parts):
        if part.microbatch != want:
            raise ValueError(f"micro-batch {part.microbatch} where {want} was due")
        dispatch = add_units(dispatch, part.dispatch)
        combine = add_units(combine, part.combine)
        hops += part.hops
        tokens += part.tokens
        tally.merge(part.tally)
        bounds += part.bounds
        gpu_routes = part.gpu_routes if gpu_routes.size == 0 else gpu_routes + part.gpu_routes
    total = whole_bytes(add_units(dispatch, combine), den)  # rounded as the replay rounds
    dispatch = whole_bytes(dispatch, den)
    combine = whole_bytes(combine, den)
    links = link_table(cluster)
    links["dispatch_bytes"] = dispatch
    links["combine_bytes"] = combine
    links["bytes"] = total
    links["busy_lower_bound_s"] = total / bandwidth
    lower = pd.DataFrame(bounds, columns=["microbatch", "layer", "phase", "lower_bound_s"])
    by_phase = lower.groupby("phase")["lower_bound_s"].sum()
    tiers = tier_bytes(cluster, total)
    summary: dict[str, Any] = {
        "tokens": float(tokens),
        "hops_per_token": hops / tokens if tokens else 0.0,
        # compute balance: per layer the busiest GPU's routes over the mean GPU's, averaged
        "gpu_balance_max_over_mean": float(max_over_mean(gpu_routes).mean()) if tokens else 0.0,
        **tally.summary(),
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
        gpu_routes=gpu_routes,
        summary=summary,
        links=links,
    )
