"""What both replays (DES and flow mode) do per micro-batch and layer, outside time itself.

:func:`layer_traffic` turns one layer of a micro-batch into its dispatch plan, routes per GPU
and counters; :class:`LayerTimes` is what a replay measured of one (micro-batch, layer) and
becomes its rows in the ``layers`` and ``phases`` frames; :func:`token_frame` is a
micro-batch's rows of the ``tokens`` frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.multipath import Endpoints
from simulator.cluster.paths import RouteTable
from simulator.dispatch import PhasePlan, dispatch_plan
from simulator.traffic import (
    RemoteCopies,
    pair_hops,
    pair_list,
    remote_copies,
    resolve_hosts_layer,
)
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class LayerTraffic:
    """One layer of one micro-batch: the dispatch plan (combine is its mirror), routes each
    GPU computes, routes each GPU computes of its own tokens, hops and network copies."""

    dispatch: PhasePlan
    routes_on: np.ndarray  # [gpus]
    own_routes: np.ndarray  # [gpus]
    hops: float  # dispatch + combine distance of the layer's routes
    copies: RemoteCopies

    @property
    def self_routes(self) -> np.ndarray:
        """[gpus] bool: the GPU computes routes of its own tokens."""
        return self.own_routes > 0


def layer_traffic(
    experts_layer: np.ndarray, origins: np.ndarray, gpus_layer: np.ndarray,
    routes: RouteTable, scheme: str, endpoints: Endpoints,
) -> LayerTraffic:
    """Hosts of the layer's routes (nearest replica), their pair counts and dispatch plan."""
    g = routes.num_gpus
    gs = routes.cluster.gpu_server
    hosts = resolve_hosts_layer(experts_layer, origins, gpus_layer, routes.gpu_distance)
    pairs = pair_list(origins, hosts, g)
    if pairs.dense is not None:
        per_pair = pairs.dense.reshape(g, g)
        routes_on, own_routes = per_pair.sum(axis=0), per_pair.diagonal().copy()
    else:
        own = pairs.src == pairs.dst
        routes_on = np.bincount(pairs.dst, weights=pairs.count, minlength=g).astype(np.int64)
        own_routes = np.bincount(pairs.src[own], weights=pairs.count[own],
                                 minlength=g).astype(np.int64)
    return LayerTraffic(
        dispatch=dispatch_plan(scheme, origins, hosts, gs, endpoints, pairs),
        routes_on=routes_on,
        own_routes=own_routes,
        hops=pair_hops(routes, pairs) * 2,
        copies=remote_copies(origins, hosts, gs, pairs),
    )


@dataclass(frozen=True)
class LayerTimes:
    """When one (micro-batch, layer) started, finished dispatch, compute and combine."""

    microbatch: int
    layer: int  # the model's layer index
    start_s: float
    dispatch_done_s: float
    compute_start_s: float  # < 0: no GPU computed
    compute_done_s: float
    combine_start_s: float  # < 0: no combine message
    finish_s: float

    def layer_row(self) -> tuple[Any, ...]:
        return (self.microbatch, self.layer, self.start_s, self.dispatch_done_s,
                self.compute_done_s, self.finish_s, self.finish_s - self.start_s)

    def phase_rows(self) -> list[tuple[Any, ...]]:
        comp = self.compute_start_s if self.compute_start_s >= 0 else self.start_s
        comb = self.combine_start_s if self.combine_start_s >= 0 else self.finish_s
        mb, li = self.microbatch, self.layer
        return [
            (mb, li, "dispatch", self.start_s, self.dispatch_done_s),
            (mb, li, "compute", comp, self.compute_done_s),
            (mb, li, "combine", comb, self.finish_s),
        ]


def token_frame(
    mb: int, block: RoutingTrace, origins: np.ndarray, latency_s: np.ndarray
) -> pd.DataFrame:
    """A micro-batch's tokens with their MoE latency (sum over layers)."""
    return pd.DataFrame(
        {
            "microbatch": np.full(block.num_tokens, mb, dtype=np.int64),
            "seq_id": block.seq_id,
            "position": block.position,
            "origin_gpu": origins,
            "moe_latency_s": latency_s,
        }
    )
