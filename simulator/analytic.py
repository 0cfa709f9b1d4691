"""The analytic counter: bytes per directed link and hops per token, vectorised, no events.

It shares only the route table and the origin/host rules with the event engine, and counts
copies its own way (per-pair route counts summed onto uplinks, server-to-server routes and
downlinks; with de-duplication, distinct (token, GPU) and (token, server) keys), so
it is the independent check of the simulator's byte accounting,
and the fast mode for huge traces.  The bandwidth lower bound of a phase is the time its
busiest link direction needs to carry that phase's bytes: no schedule can do better.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.paths import RouteTable
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
        return self.dispatch_link_bytes + self.combine_link_bytes


def link_route_counts(routes: RouteTable, counts: np.ndarray) -> np.ndarray:
    """Routes crossing each directed link given per-pair route counts [gpus, gpus]."""
    w = counts.ravel()[routes.pair_of_entry]
    out = np.bincount(routes.pair_links, weights=w, minlength=2 * len(routes.cluster.links))
    return np.rint(out).astype(np.int64)


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values.

    Sort-based (numpy's hash-based ``unique`` is slow here), stable (timsort) because the
    keys arrive in runs already sorted by token.
    """
    k = np.sort(keys, kind="stable")
    keep = np.ones(k.shape, dtype=bool)
    keep[1:] = k[1:] != k[:-1]
    return k[keep]


class _Counter:
    """Copies per directed link of one layer, both phases, segment by segment.

    A route between GPUs of different servers is the origin's uplink, the servers' middle
    route and the host's downlink (``RouteTable``); within a server, uplink then downlink.
    """

    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes
        self.nlinks = 2 * len(routes.cluster.links)
        self.gs = routes.cluster.gpu_server
        ns = routes.num_servers
        self.mid_pair = np.repeat(np.arange(ns * ns), np.diff(routes.middle_offsets))
        # for the combine phase: pair (s, t) of the middle route carries copies of pair (t, s)
        self.mid_pair_t = (self.mid_pair % ns) * ns + self.mid_pair // ns
        self.server_pair_of_gpu_pair = (self.gs[:, None] * ns + self.gs[None, :]).ravel()

    def _middle(self, src_server: np.ndarray, dst_server: np.ndarray) -> np.ndarray:
        ns = self.routes.num_servers
        per_pair = np.bincount(src_server * ns + dst_server, minlength=ns * ns)
        return np.bincount(
            self.routes.middle_links, weights=per_pair[self.mid_pair], minlength=self.nlinks
        )

    def count_routes(
        self, counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Without de-duplication: every route away from its origin is one copy."""
        r = self.routes
        n = self.nlinks
        ns = r.num_servers
        c = counts.copy()
        np.fill_diagonal(c, 0)
        out_gpu = c.sum(axis=1)
        in_gpu = c.sum(axis=0)
        sp = np.bincount(self.server_pair_of_gpu_pair, weights=c.ravel(), minlength=ns * ns)
        sp[:: ns + 1] = 0  # same-server pairs use no middle route
        mid_d = np.bincount(r.middle_links, weights=sp[self.mid_pair], minlength=n)
        mid_c = np.bincount(r.middle_links, weights=sp[self.mid_pair_t], minlength=n)
        up = np.bincount(r.gpu_uplink, weights=out_gpu, minlength=n)
        down = np.bincount(r.gpu_downlink, weights=in_gpu, minlength=n)
        up_c = np.bincount(r.gpu_uplink, weights=in_gpu, minlength=n)
        down_c = np.bincount(r.gpu_downlink, weights=out_gpu, minlength=n)
        return (
            np.rint(up + mid_d + down).astype(np.int64),
            np.rint(up_c + mid_c + down_c).astype(np.int64),
        )

    def count_dedup(
        self, origins: np.ndarray, hosts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One copy per (token, host GPU) and per (token, remote server)."""
        r = self.routes
        g = r.num_gpus
        ns = r.num_servers
        gs = self.gs
        t = np.repeat(np.arange(hosts.shape[0], dtype=np.int64), hosts.shape[1])
        h = hosts.ravel()
        away = h != origins[t]
        key = _distinct(t[away] * g + h[away])  # one copy per (token, host GPU)
        tt, hh = key // g, key % g
        oo = origins[tt]
        local = gs[hh] == gs[oo]
        skey = _distinct(tt[~local] * ns + gs[hh[~local]])  # one per (token, remote server)
        t2, s2 = skey // ns, skey % ns
        o2 = origins[t2]
        n = self.nlinks

        def at(ids: np.ndarray) -> np.ndarray:
            return np.bincount(ids, minlength=n).astype(np.float64)

        dispatch = (
            at(r.gpu_uplink[oo[local]]) + at(r.gpu_uplink[o2])
            + self._middle(gs[o2], s2) + at(r.gpu_downlink[hh])
        )
        combine = (
            at(r.gpu_uplink[hh]) + self._middle(s2, gs[o2])
            + at(r.gpu_downlink[oo[local]]) + at(r.gpu_downlink[o2])
        )
        return np.rint(dispatch).astype(np.int64), np.rint(combine).astype(np.int64)


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
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    g = routes.num_gpus
    cluster = routes.cluster
    nlinks = 2 * len(cluster.links)
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
    dispatch = np.zeros(nlinks, dtype=np.int64)
    combine = np.zeros(nlinks, dtype=np.int64)
    counter = _Counter(routes)
    hops = 0.0
    tokens = 0
    tally = CopyTally()
    bounds = []
    if microbatch_tokens is not None:
        blocks = by_tokens(blocks, microbatch_tokens)
    for mb, block in enumerate(blocks):
        m = block.model
        validate_layout(expert_gpus, m, g)
        db, cb = config.route_bytes(m)
        origins = resolve_origins(block, g)
        tokens += block.num_tokens
        for li in range(m.num_moe_layers):
            hosts = resolve_hosts_layer(
                block.experts[:, li, :], origins, expert_gpus[li], routes.distance
            )
            c = pair_counts(origins, hosts, g)
            hops += float((c * routes.distance).sum()) * 2
            tally.add(remote_copies(origins, hosts, cluster.gpu_server), block.num_tokens, db + cb)
            if config.server_dedup:
                d_copies, c_copies = counter.count_dedup(origins, hosts)
            else:
                d_copies, c_copies = counter.count_routes(c)
            dispatch += d_copies * db
            combine += c_copies * cb
            layer = m.moe_layer_indices[li]
            bounds.append((mb, layer, "dispatch", float((d_copies * db / bandwidth).max())))
            bounds.append((mb, layer, "combine", float((c_copies * cb / bandwidth).max())))
    total = dispatch + combine
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
        **tally.summary(),
        **tiers,
        "dispatch_lower_bound_s": float(by_phase.get("dispatch", 0.0)),
        "combine_lower_bound_s": float(by_phase.get("combine", 0.0)),
        "server_dedup": bool(config.server_dedup),
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
