"""The discrete-event replay (SimPy).  Time unit: seconds (float).

Lifecycle of :func:`simulate`: build the environment, one :class:`LinkDirection` per link
direction and one :class:`Gpu` per GPU from the cluster -> start a launcher that keeps
``inflight_microbatches`` micro-batches running (pulling blocks from the stream only when a
slot frees) -> run -> build frames (:mod:`simulator.summaries`).

Per micro-batch and MoE layer (layers in order):

1. *dispatch* in three aggregated stages (:mod:`simulator.transfer`): one uplink message per
   source GPU (to its server node), one message per pair of network endpoints (per-GPU NICs
   or pooled server NICs, :mod:`simulator.cluster.multipath`) along their route, split over
   equal-cost paths by the multipath mode, once every uplink carrying data for it has arrived,
   one downlink message per destination GPU once its inputs have arrived.  Messages are cut
   into chunks of at most ``chunk_bytes`` that pipeline across the hops of their stage.
   Copies per stage come from the dispatch scheme (:mod:`simulator.dispatch`).  Routes whose
   expert sits on the origin GPU move nothing.
2. *compute*: a GPU starts its experts once its dispatch downlink has arrived; it takes
   ``routes x route_compute_s`` (FIFO with other micro-batches), so an overloaded GPU is a
   straggler that holds up its layer.
3. *combine*: the mirror image; a GPU's uplink leaves as soon as its compute is done.  The
   layer ends when every combine message has arrived and every GPU has finished computing.

A token's latency at a layer is the time from the layer's start until its origin GPU has all
its results back (the last combine arrival at that GPU, or its own compute for local routes);
its MoE latency is the sum over layers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import simpy

from simulator.cluster.link_load_classes import link_classes
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import RouteTable
from simulator.cluster.share_units import share_units, whole_bytes
from simulator.components import BusyLog, Gpu, LinkDirection
from simulator.config import SimConfig
from simulator.dispatch import check_scheme
from simulator.layer_traffic import LayerTimes, layer_traffic, token_frame
from simulator.microbatches import by_tokens
from simulator.receive_work import phase_work
from simulator.summaries import RunRecords, SimFrames, collect_sim
from simulator.traffic import CopyTally, validate_layout
from simulator.transfer import Path, Transfer
from traces.infra.errors import InputError
from traces.origins import resolve_origins
from traces.trace import RoutingTrace

TIME_UNIT = "s"


@dataclass(frozen=True, eq=False)
class SimResult(SimFrames):
    """Frames of one replay (:class:`SimFrames`), with the configuration that produced them."""

    config: SimConfig


class _Run:
    """State of one replay (counters live on the run, not on classes)."""

    def __init__(
        self, routes: RouteTable, expert_gpus: np.ndarray, config: SimConfig, env: simpy.Environment
    ) -> None:
        self.env = env
        self.routes = routes
        self.expert_gpus = expert_gpus
        self.config = config
        self.chunk = config.chunk_bytes
        self.g = routes.num_gpus
        self.ns = routes.num_servers
        self.gpu_server = routes.cluster.gpu_server
        self.log = BusyLog()
        traffic = config.traffic
        self.multipath = MultipathRoutes(routes, traffic.multipath, traffic.flows_per_pair)
        self.endpoints = self.multipath.endpoints
        # link counters count bytes in units of 1/denominator, exactly (share_units)
        self.denominator = self.multipath.share_denominator
        self.unit = self.denominator or 1
        check_scheme(traffic.dispatch, self.endpoints, routes.cluster.name)
        cl = routes.cluster.links
        bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in cl], 2)
        latency = np.repeat([lk.latency_s for lk in cl], 2)
        # links that always carry the same load share one LinkDirection (see link_classes)
        self.link_class = link_classes(self.multipath.class_entries(), bandwidth, latency)
        own = {
            int(i): LinkDirection(env, int(i), float(bandwidth[i]), float(latency[i]), self.log)
            for i in np.unique(self.link_class)
        }
        self.links = [own[int(c)] for c in self.link_class]
        self._paths: dict[tuple[int, int, int], Path] = {}
        self.gpus = [Gpu(env) for _ in range(self.g)]
        self.gpu_routes = np.zeros(self.g, dtype=np.int64)
        self.layer_rows: list[tuple] = []
        self.phase_rows: list[tuple] = []
        self.token_parts: list[pd.DataFrame] = []
        self.hops = 0.0
        self.tokens = 0
        self.copies = CopyTally()
        self.started = 0
        self.finished = 0

    def path(self, up: int, pair: int, down: int) -> Path:
        """Hops of a message: GPU ``up``'s uplink, endpoint pair ``pair``'s route, GPU
        ``down``'s downlink (each if >= 0)."""
        key = (up, pair, down)
        got = self._paths.get(key)
        if got is not None:
            return got
        routes = self.routes
        whole = self.unit
        hops: list[tuple[tuple[LinkDirection, float, float], ...]] = []
        if up >= 0:
            hops.append(((self.links[int(routes.gpu_uplink[up])], 1.0, whole),))
        if pair >= 0:
            for ids, shares in self.multipath.hops(*divmod(pair, self.endpoints.count)):
                units = shares * whole if self.denominator is None else share_units(
                    shares, self.denominator)
                hop: dict[int, tuple[LinkDirection, float, float]] = {}
                for x, share, u in zip(ids.tolist(), shares.tolist(), units.tolist(),
                                       strict=True):
                    c = int(self.link_class[x])
                    hop.setdefault(c, (self.links[c], share, u))
                hops.append(tuple(hop.values()))
        if down >= 0:
            hops.append(((self.links[int(routes.gpu_downlink[down])], 1.0, whole),))
        got = self._paths[key] = tuple(hops)
        return got

    def records(self) -> RunRecords:
        """What the finished run recorded, as plain values for :mod:`simulator.summaries`."""
        lds = self.links  # members of a link class share their class's LinkDirection
        stats = {
            name: np.array([getattr(ld, attr) for ld in lds], dtype=np.float64)
            for name, attr in (
                ("link_chunks", "chunks"), ("link_busy_s", "busy_s"),
                ("link_queue_sum_s", "queue_sum_s"), ("link_queue_max_s", "queue_max_s"),
            )
        }
        # split modes carry fractional shares of a copy: whole bytes are the exact sum rounded
        units = np.array([ld.units for ld in lds], dtype=object)
        stats["link_bytes"] = whole_bytes(units, self.denominator).astype(np.float64)
        for ld in lds:
            ld.flush()  # the open busy periods go to the log
        log = self.log  # one record per link class (its representative's id)
        traffic = self.config.traffic
        return RunRecords(
            cluster=self.routes.cluster, makespan_s=float(self.env.now), **stats,
            busy_link=np.frombuffer(log.link, dtype=np.int32).astype(np.int64),
            busy_start_s=np.frombuffer(log.start, dtype=np.float64),
            busy_end_s=np.frombuffer(log.end, dtype=np.float64),
            layer_rows=self.layer_rows, phase_rows=self.phase_rows,
            token_parts=self.token_parts,
            gpu_busy_s=np.array([gp.busy_s for gp in self.gpus]), gpu_routes=self.gpu_routes,
            hops=self.hops, tokens=self.tokens, copies=self.copies.summary(),
            utilisation_window_s=self.config.utilisation_window_s,
            dispatch=traffic.dispatch, multipath=traffic.multipath, link_class=self.link_class,
        )

    def microbatch(self, mb: int, block: RoutingTrace) -> Generator[simpy.Event, Any, None]:
        env = self.env
        m = block.model
        traffic = self.config.traffic
        db, cb = traffic.route_bytes(m)
        t_route = self.config.route_compute_s(
            traffic.hidden_size or m.hidden_size, m.moe_intermediate_size
        )
        g = self.g
        origins = resolve_origins(block, g)
        tokens_from = np.bincount(origins, minlength=g)
        self.tokens += block.num_tokens
        latency = np.zeros(block.num_tokens)
        for li in range(m.num_moe_layers):
            t0 = float(env.now)
            lt = layer_traffic(block.experts[:, li, :], origins, self.expert_gpus[li],
                               self.routes, traffic.dispatch, self.endpoints)
            self.hops += lt.hops
            self.copies.add(lt.copies, block.num_tokens, db + cb)
            self.gpu_routes += lt.routes_on
            layer = _Layer(self, t0, lt.routes_on, lt.self_routes, t_route)
            d_work, c_work = phase_work(traffic.dispatch, lt.dispatch, (db, cb),
                                        lt.own_routes, tokens_from)
            layer.combine = Transfer(self, lt.dispatch.mirror(), cb, True, layer.combine_arrived,
                                     c_work)
            layer.remaining = int((lt.routes_on > 0).sum()) + layer.combine.deliveries
            layer.dispatch = Transfer(self, lt.dispatch, db, False, layer.dispatch_arrived,
                                      d_work)
            arriving = lt.dispatch.delivered_to(g)
            for b in np.flatnonzero((lt.routes_on > 0) & (arriving == 0)).tolist():
                layer.start_compute(b)
            if layer.remaining == 0:
                layer.end.succeed()
            yield layer.end
            latency += layer.done_at[origins] - t0
            times = LayerTimes(
                mb, m.moe_layer_indices[li], t0, layer.dispatch_done, layer.compute_start,
                layer.compute_done, layer.combine.first_start, float(env.now),
            )
            self.layer_rows.append(times.layer_row())
            self.phase_rows += times.phase_rows()
        self.token_parts.append(token_frame(mb, block, origins, latency))

    def launcher(self, blocks: Iterable[RoutingTrace]) -> Generator[simpy.Event, Any, None]:
        slots = simpy.Resource(self.env, capacity=self.config.inflight_microbatches)

        def run_one(
            mb: int, block: RoutingTrace, req: simpy.resources.resource.Request
        ) -> Generator[simpy.Event, Any, None]:
            yield from self.microbatch(mb, block)
            self.finished += 1
            slots.release(req)

        for mb, block in enumerate(blocks):
            self.started += 1
            req = slots.request()
            yield req
            self.env.process(run_one(mb, block, req))


class _Layer:
    """Bookkeeping of one (micro-batch, layer): compute start/finish, arrivals, the end."""

    def __init__(
        self, run: _Run, t0: float, routes_on: np.ndarray, self_routes: np.ndarray,
        t_route: float,
    ) -> None:
        self.run = run
        self.t0 = t0
        self.routes_on = routes_on.tolist()
        self.self_routes = self_routes.tolist()
        self.t_route = t_route
        self.done_at = np.full(run.g, float(t0))
        self.dispatch_done = t0
        self.compute_start = -1.0
        self.compute_done = t0
        self.remaining = 0
        self.end = run.env.event()
        self.combine: Transfer
        self.dispatch: Transfer

    def _tick(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.end.succeed()

    def dispatch_arrived(self, b: int) -> None:
        self.dispatch_done = self.run.env.now
        self.start_compute(b)

    def start_compute(self, b: int) -> None:
        start = self.run.gpus[b].compute(
            self.routes_on[b] * self.t_route, lambda _e: self._computed(b)
        )
        if self.compute_start < 0 or start < self.compute_start:
            self.compute_start = start

    def _computed(self, b: int) -> None:
        now = self.run.env.now
        self.compute_done = now
        if self.self_routes[b] and now > self.done_at[b]:
            self.done_at[b] = now
        self.combine.release(b)
        self._tick()

    def combine_arrived(self, a: int) -> None:
        now = self.run.env.now
        if now > self.done_at[a]:
            self.done_at[a] = now
        self._tick()


def simulate(
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: SimConfig | None = None,
    background: Callable[[_Run], None] | None = None,
) -> SimResult:
    """Replay a trace through the cluster for one layout.

    Each block is one micro-batch unless ``config.microbatch_tokens`` re-cuts the stream.
    Blocks are pulled lazily, so a streamed trace is never held in memory as a whole.
    ``background(run)`` starts other traffic on the same links at time 0 (expert-weight
    migration, :mod:`simulator.migration`); it may switch ``run.expert_gpus`` later.
    """
    config = config or SimConfig()
    if config.mode != "des":
        raise ValueError(f"simulate() is the DES; mode {config.mode!r} runs elsewhere")
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    validate_links(routes)
    env = simpy.Environment()
    run = _Run(routes, expert_gpus, config, env)
    if background is not None:
        background(run)
    env.process(run.launcher(replay_stream(blocks, routes, expert_gpus, config)))
    env.run()
    if run.finished != run.started:  # an internal error, never bad input
        raise RuntimeError(
            f"simulate: {run.started - run.finished} micro-batch(es) never finished"
        )
    frames = collect_sim(run.records())
    return SimResult(**{f.name: getattr(frames, f.name) for f in fields(SimFrames)},
                     config=config)


def replay_stream(
    blocks: Iterable[RoutingTrace], routes: RouteTable, expert_gpus: np.ndarray,
    config: SimConfig,
) -> Iterator[RoutingTrace]:
    """The micro-batches a replay runs (re-cut to ``microbatch_tokens`` if set), each checked
    against the layout as it is pulled."""
    stream = blocks if config.microbatch_tokens is None else by_tokens(
        blocks, config.microbatch_tokens
    )
    for b in stream:
        validate_layout(expert_gpus, b.model, routes.num_gpus)
        yield b


def validate_links(routes: RouteTable) -> None:
    """Every link needs a positive, finite bandwidth and a finite latency >= 0."""
    for lk in routes.cluster.links:
        bw = lk.bandwidth_bytes_per_s
        if not (np.isfinite(bw) and bw > 0):
            raise InputError(
                f"cluster {routes.cluster.name!r}: link {lk.a}-{lk.b} has bandwidth {bw};"
                " give every link a positive bandwidth_bytes_per_s"
            )
        if not (np.isfinite(lk.latency_s) and lk.latency_s >= 0):
            raise InputError(
                f"cluster {routes.cluster.name!r}: link {lk.a}-{lk.b} has latency"
                f" {lk.latency_s}; it must be >= 0"
            )
