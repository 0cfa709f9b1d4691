"""How much work a DES replay will be, counted before it runs (for the line said first).

The DES's cost is its events, and nearly all of them are chunk trains stepping from hop to hop
(:class:`simulator.transfer._Train`): one event per (message slice, hop) and phase.  How many
messages a layer sends depends on the dispatch scheme, the NICs and how many tokens share a
micro-batch (an all-to-all over pooled NICs sends a handful of aggregated messages per server,
DeepEP's normal kernels one per origin GPU and remote server plus a fan-out per receiving GPU),
so a per-token rate can be off by orders of magnitude.  :func:`hop_events` therefore builds the
first micro-batch's dispatch plans, exactly as the replay will, and counts their hop events;
the run's estimate is that count scaled by the number of micro-batches, times the measured
CPU cost of one hop event (:data:`traces.infra.limits.CPU_S_PER_HOP_EVENT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import RouteTable
from simulator.dispatch import PhasePlan
from simulator.layer_traffic import layer_traffic
from simulator.traffic_config import TrafficConfig
from simulator.transfer import slice_rounds
from traces.origins import resolve_origins
from traces.trace import RoutingTrace


@dataclass(frozen=True)
class DesWork:
    """What a replay's CPU time is made of: trains started and hop events stepped."""

    trains: float
    hop_events: float

    def __add__(self, other: DesWork) -> DesWork:
        return DesWork(self.trains + other.trains, self.hop_events + other.hop_events)

    def scaled(self, factor: float) -> DesWork:
        return DesWork(self.trains * factor, self.hop_events * factor)


def plan_events(plan: PhasePlan, route_hops: dict[int, int],
                multipath: MultipathRoutes) -> DesWork:
    """Trains and hop events of one phase: each message slice is a train that steps once per
    hop of its path (GPU uplink, the endpoint pair's route, GPU downlink:
    :meth:`simulator.engine._Run.path`)."""
    count = multipath.endpoints.count
    hops = (plan.up >= 0).astype(np.int64) + (plan.down >= 0)
    pairs = plan.pair
    for p in np.unique(pairs[pairs >= 0]).tolist():
        n = route_hops.get(p)
        if n is None:
            n = route_hops[p] = len(multipath.hops(*divmod(p, count)))
        hops[pairs == p] += n
    rounds = slice_rounds(plan)
    return DesWork(int(rounds.sum()), int((rounds * hops).sum()))


def microbatch_work(block: RoutingTrace, routes: RouteTable, expert_gpus: np.ndarray,
                    traffic: TrafficConfig) -> DesWork:
    """Trains and hop events of one micro-batch, every MoE layer, dispatch and combine (the
    combine sends the dispatch's messages mirrored: the same slices over the same hops)."""
    egs = np.asarray(expert_gpus, dtype=np.int64)
    if egs.ndim == 2:
        egs = egs[:, :, None]
    multipath = MultipathRoutes(routes, traffic.multipath, traffic.flows_per_pair)
    origins = resolve_origins(block, routes.num_gpus)
    route_hops: dict[int, int] = {}
    work = DesWork(0, 0)
    for li in range(block.model.num_moe_layers):
        lt = layer_traffic(block.experts[:, li, :], origins, egs[li], routes,
                           traffic.dispatch, multipath.endpoints)
        work = work + plan_events(lt.dispatch, route_hops, multipath).scaled(2)
    return work


def stand_in_work(block: RoutingTrace, routes: RouteTable, traffic: TrafficConfig) -> DesWork:
    """:func:`microbatch_work` of ``block`` placed round-robin, one copy per expert: the stand-in
    for a layout not known before the run (a re-placing replay's, a study cell's); the message
    count hardly depends on it."""
    from placement.baselines import round_robin_gpus

    m = block.model
    layout = round_robin_gpus(m.num_moe_layers, m.num_routed_experts, routes.num_gpus)
    return microbatch_work(block, routes, np.asarray(layout), traffic)


def first_step_work(trace: Path, routes: RouteTable, origins: str | None,
                    traffic: TrafficConfig) -> tuple[DesWork, int] | None:
    """:func:`stand_in_work` of a trace's first recorded step replayed as one micro-batch, and
    that step's tokens; None for a trace without tokens."""
    from traces.io import iter_trace
    from traces.origin_models import resolve_model
    from traces.origins import OriginAssigner, with_origins

    assigner = OriginAssigner(resolve_model(origins), routes.cluster.gpu_server)
    block = next(with_origins(iter_trace(trace), assigner), None)
    if block is None or block.num_tokens == 0:
        return None
    if block.step is not None:
        block = block.take(np.flatnonzero(block.step == block.step[0]))
    return stand_in_work(block, routes, traffic), block.num_tokens


def trace_hop_events(trace: Path, routes: RouteTable, origins: str | None,
                     traffic: TrafficConfig, tokens: int) -> float | None:
    """Hop events of a DES replay of the ``tokens`` tokens of ``trace`` whose layout changes
    as it runs (``rebalance``): :func:`first_step_work` scaled to them; None without tokens."""
    got = first_step_work(trace, routes, origins, traffic)
    if got is None:
        return None
    work, step_tokens = got
    return work.hop_events * tokens / step_tokens
