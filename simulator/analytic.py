"""The analytic counter: bytes per directed link and hops per token, vectorised, no events.

It shares only the route table and the origin/host rules with the event engine, so it is the
independent check of the simulator's byte accounting, and the fast mode for huge traces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.paths import RouteTable
from simulator.traffic import (
    TrafficConfig,
    pair_counts,
    resolve_hosts,
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
    network_bytes: int  # bytes put on the network (server uplinks), both phases
    lower_bound_s: pd.DataFrame  # per (microbatch, layer, phase): max link bytes / bandwidth

    @property
    def link_bytes(self) -> np.ndarray:
        return self.dispatch_link_bytes + self.combine_link_bytes


def link_route_counts(routes: RouteTable, counts: np.ndarray) -> np.ndarray:
    """Routes crossing each directed link given per-pair route counts [gpus, gpus]."""
    w = counts.ravel()[routes.pair_of_entry]
    out = np.bincount(routes.pair_links, weights=w, minlength=2 * len(routes.cluster.links))
    return np.rint(out).astype(np.int64)


def count_traffic(
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: TrafficConfig | None = None,
) -> AnalyticResult:
    """Count a trace's traffic for one layout; each block is one micro-batch."""
    config = config or TrafficConfig()
    g = routes.num_gpus
    nlinks = 2 * len(routes.cluster.links)
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in routes.cluster.links], 2)
    dispatch = np.zeros(nlinks, dtype=np.int64)
    combine = np.zeros(nlinks, dtype=np.int64)
    hops = 0.0
    tokens = 0
    bounds = []
    db = cb = 0
    for mb, block in enumerate(blocks):
        m = block.model
        validate_layout(expert_gpus, m, g)
        db, cb = config.route_bytes(m)
        origins = resolve_origins(block, g)
        hosts = resolve_hosts(block.experts, origins, expert_gpus, routes.distance)
        hops += float(routes.distance[origins[:, None, None], hosts].sum()) * 2
        tokens += block.num_tokens
        for li in range(m.num_moe_layers):
            c = pair_counts(origins, hosts[:, li, :], g)
            np.fill_diagonal(c, 0)
            d_routes = link_route_counts(routes, c)
            c_routes = link_route_counts(routes, c.T)
            dispatch += d_routes * db
            combine += c_routes * cb
            bounds.append(
                (mb, m.moe_layer_indices[li], "dispatch", float((d_routes * db / bandwidth).max()))
            )
            bounds.append(
                (mb, m.moe_layer_indices[li], "combine", float((c_routes * cb / bandwidth).max()))
            )
    uplinks = _uplink_ids(routes)
    return AnalyticResult(
        dispatch_link_bytes=dispatch,
        combine_link_bytes=combine,
        num_tokens=tokens,
        hops_per_token=hops / tokens if tokens else 0.0,
        network_bytes=int((dispatch + combine)[uplinks].sum()),
        lower_bound_s=pd.DataFrame(
            bounds, columns=["microbatch", "layer", "phase", "lower_bound_s"]
        ),
    )


def _uplink_ids(routes: RouteTable) -> np.ndarray:
    """Directed ids of links leaving a server or GPU towards the network (weight > 0 first hop).

    Bytes on these count each route that crosses the network exactly once.
    """
    kinds = {n.name: n.kind for n in routes.cluster.nodes}
    out = []
    for i, lk in enumerate(routes.cluster.links):
        if lk.weight <= 0:
            continue
        if kinds[lk.a] in ("server", "gpu") and kinds[lk.b] == "switch":
            out.append(2 * i)
        elif kinds[lk.b] in ("server", "gpu") and kinds[lk.a] == "switch":
            out.append(2 * i + 1)
    return np.array(out, dtype=np.int64)
