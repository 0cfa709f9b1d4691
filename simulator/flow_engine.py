"""Flow mode: the replay with messages as flows at max-min fair rates, no per-message events.

The same micro-batches, layers, phase plans (:mod:`simulator.dispatch`), dependencies between
stage messages, expert compute (FIFO per GPU) and ``inflight_microbatches`` overlap as the
DES (:mod:`simulator.engine`), and the same frames.  What differs is how a message crosses
the network: instead of chunk trains served first-come first-served link by link, every
message is a *flow* over all its links at once, sharing each link with the flows active on it
at their max-min fair rates, first come first served: each batch of flows started at one
event is served after the batches started before it (strict priority by start order, as the
DES's FIFO links serve messages; :mod:`simulator.flow_network`).  Events are flow starts, flow
completions (which free capacity: rates are recomputed), arrivals (one path latency plus the
pipeline fill of the last chunk after completion) and compute completions, each handled for
all the flows, messages and GPUs concerned at once (numpy), so the cost is per event batch,
not per message and hop.  ``flow_tolerance`` merges the events within that fraction of the
time scale (the running layers' time so far, or their previous layer's duration, whichever is
longer) and handles them together at the middle of their span; 0 handles each on its own.
With one micro-batch in flight each micro-batch is replayed on its own and the parts added up
(:mod:`simulator.flow_parts`; what a replay split over Dask does too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from simulator.cluster.paths import RouteTable
from simulator.config import SimConfig
from simulator.dispatch import PhasePlan, check_scheme
from simulator.engine import SimResult, replay_stream, validate_links
from simulator.flow_network import FluidNet
from simulator.flow_parts import FlowPart, combine_flow_parts, frame_fields
from simulator.flow_paths import flow_fabric, gather_rows
from simulator.layer_traffic import LayerTimes, layer_traffic, token_frame
from simulator.modes import DEFAULT_FLOW_TOLERANCE
from simulator.receive_work import ReceiveClock, ReceiveWork, phase_work
from simulator.traffic import CopyTally, validate_layout
from traces.origins import resolve_origins
from traces.trace import RoutingTrace

ARRIVAL, COMPUTE, DELIVERY = 0, 1, 2  # DELIVERY: a GPU's data, after the kernel's work


def _nonzero(mask: np.ndarray) -> np.ndarray:
    """Indices where a 1-D ``mask`` is true (:func:`numpy.flatnonzero` without its wrapping)."""
    return mask.nonzero()[0]


class _Pool:
    """Pending discrete events: their times and (kind, owner, item) rows."""

    def __init__(self) -> None:
        self.t = np.zeros(0)
        self.ev = np.zeros((0, 3), dtype=np.int64)

    def push(self, t: np.ndarray, kind: int, owner: int | np.ndarray, item: np.ndarray) -> None:
        if t.size == 0:
            return
        ev = np.empty((t.size, 3), dtype=np.int64)
        ev[:, 0], ev[:, 1], ev[:, 2] = kind, owner, item
        self.t = np.concatenate([self.t, t])
        self.ev = np.concatenate([self.ev, ev])

    def next_time(self) -> float:
        return float(np.minimum.reduce(self.t)) if self.t.size else np.inf

    def pop_due(self, until: float) -> np.ndarray:
        """The (kind, owner, item) rows of the events due by ``until``, in the order pushed."""
        due = self.t <= until
        out = self.ev[due]
        keep = ~due
        self.t, self.ev = self.t[keep], self.ev[keep]
        return out


class _Transfer:
    """One phase's messages, vectorised (the DES's :class:`simulator.transfer.Transfer`)."""

    def __init__(
        self, run: _FlowRun, plan: PhasePlan, bytes_per_copy: int, gated: bool,
        on_delivered: Callable[[np.ndarray, float], None], now: float,
        work: ReceiveWork | None = None,
    ) -> None:
        self.run = run
        self.waiting = 0  # GPUs whose data has arrived, delivered after the kernel's work
        self.slot = run.register(self)
        self.plan = plan
        g = run.g
        n = int(plan.copies.shape[0])
        self.nbytes = plan.copies.astype(np.int64) * bytes_per_copy
        self.path = run.paths.ids(plan.up, plan.pair, plan.down)
        run.net.count(self.path, self.nbytes)  # every message starts once: count them now
        src, dst = plan.feeds
        order = np.argsort(src, kind="stable")
        self.dep_ids = dst[order]
        self.dep_off = np.searchsorted(src[order], np.arange(n + 1))
        pending = np.bincount(dst, minlength=n)
        entry = (pending == 0) & (plan.up >= 0)
        if gated:
            gated_msgs = _nonzero(entry)
            order = np.argsort(plan.up[gated_msgs], kind="stable")
            self.gate_ids = gated_msgs[order]
            self.gate_off = np.searchsorted(plan.up[self.gate_ids], np.arange(g + 1))
            pending = pending + entry
        self.pending = pending
        final = np.ones(n, dtype=bool)
        final[src] = False
        final &= plan.down >= 0
        self.final = final
        self.left = np.bincount(plan.down[final], minlength=g)
        self.deliveries = int((self.left > 0).sum())
        self.clock = None if work is None else ReceiveClock(work, self.left, now)
        self.on_delivered = on_delivered
        self.first_start = -1.0
        self.priority = 0  # of the flows it started last: their place in the start order
        self.open = n
        self._start(_nonzero(pending == 0), now)
        if n == 0:
            run.unregister(self.slot)

    def _start(self, msgs: np.ndarray, now: float) -> None:
        if msgs.size == 0:
            return
        if self.first_start < 0:
            self.first_start = now
        self.priority = self.run.start_order()
        self.run.net.add(self.path[msgs], self.nbytes[msgs], self.slot, msgs, now,
                         self.priority, counted=True)

    def release(self, gpus: np.ndarray, now: float) -> None:
        """The GPUs' compute finished: the messages their data enters by may start."""
        msgs = gather_rows(self.gate_off, self.gate_ids, gpus)
        self.pending[msgs] -= 1
        self._start(msgs[self.pending[msgs] == 0], now)

    def arrived(self, msgs: np.ndarray, now: float) -> None:
        self.open -= msgs.size
        deps = gather_rows(self.dep_off, self.dep_ids, msgs)
        if deps.size:
            fed = np.bincount(deps, minlength=self.pending.size)
            self.pending -= fed
            self._start(_nonzero((fed > 0) & (self.pending == 0)), now)
        last = msgs[self.final[msgs]]
        b = self.plan.down[last]
        if b.size and self.clock is not None:
            done, done_s = self.clock.arrived(b, last, now)
            self.waiting += done.size
            self.run.pool.push(done_s, DELIVERY, self.slot, done)
        elif b.size:
            got = np.bincount(b, minlength=self.left.size)
            self.left -= got
            done = _nonzero((got > 0) & (self.left == 0))
            if done.size:
                self.on_delivered(done, now)
        self._close()

    def delivered(self, gpus: np.ndarray, now: float) -> None:
        self.waiting -= gpus.size
        self.on_delivered(gpus, now)
        self._close()

    def _close(self) -> None:
        if self.open == 0 and self.waiting == 0:
            self.run.unregister(self.slot)


class _Layer:
    """Bookkeeping of one (micro-batch, layer), as the DES's."""

    def __init__(self, mb: _Microbatch, routes_on: np.ndarray, self_routes: np.ndarray,
                 now: float) -> None:
        self.mb = mb
        run = mb.run
        self.run = run
        self.slot = run.register(self)
        run.layers[self.slot] = self
        self.t0 = now
        self.routes_on = routes_on
        self.self_routes = self_routes
        self.done_at = np.full(run.g, now)
        self.dispatch_done = now
        self.compute_start = -1.0
        self.compute_done = now
        self.remaining = 0
        self.combine: _Transfer
        self.dispatch: _Transfer

    def tick(self, k: int, now: float) -> None:
        self.remaining -= k
        if self.remaining == 0:
            self.run.unregister(self.slot)
            self.mb.layer_done(self, now)

    def time_scale(self, now: float) -> float:
        """The layer's time so far, or its predecessor's duration if that was longer."""
        return max(now - self.t0, self.mb.previous_s)

    def dispatch_arrived(self, gpus: np.ndarray, now: float) -> None:
        self.dispatch_done = now
        self.start_compute(gpus, now)

    def start_compute(self, gpus: np.ndarray, now: float) -> None:
        run = self.run
        start = np.maximum(run.gpu_free[gpus], now)
        took = self.routes_on[gpus] * self.mb.t_route
        run.gpu_free[gpus] = start + took
        run.gpu_busy[gpus] += took
        run.pool.push(start + took, COMPUTE, self.slot, gpus)
        first = float(start.min())
        if self.compute_start < 0 or first < self.compute_start:
            self.compute_start = first

    def computed(self, gpus: np.ndarray, now: float) -> None:
        self.compute_done = now
        own = gpus[self.self_routes[gpus]]
        self.done_at[own] = np.maximum(self.done_at[own], now)
        self.combine.release(gpus, now)
        self.tick(gpus.size, now)

    def combine_arrived(self, gpus: np.ndarray, now: float) -> None:
        self.done_at[gpus] = np.maximum(self.done_at[gpus], now)
        self.tick(gpus.size, now)


class _Microbatch:
    """One micro-batch going through its layers."""

    def __init__(self, run: _FlowRun, index: int, block: RoutingTrace, now: float) -> None:
        self.run = run
        self.index = index
        self.block = block
        m = block.model
        traffic = run.config.traffic
        self.db, self.cb = traffic.route_bytes(m)
        self.t_route = run.config.route_compute_s(
            traffic.hidden_size or m.hidden_size, m.moe_intermediate_size
        )
        self.origins = resolve_origins(block, run.g)
        self.tokens_from = np.bincount(self.origins, minlength=run.g)
        run.tokens += block.num_tokens
        self.latency_s = np.zeros(block.num_tokens)
        self.li = 0
        self.previous_s = 0.0  # duration of the previous layer
        self.start_layer(now)

    def start_layer(self, now: float) -> None:
        run, block = self.run, self.block
        scheme = run.config.traffic.dispatch
        lt = layer_traffic(block.experts[:, self.li, :], self.origins, run.expert_gpus[self.li],
                           run.routes, scheme, run.multipath.endpoints)
        run.hops += lt.hops
        run.copies.add(lt.copies, block.num_tokens, self.db + self.cb)
        run.gpu_routes += lt.routes_on
        layer = _Layer(self, lt.routes_on, lt.self_routes, now)
        d_work, c_work = phase_work(scheme, lt.dispatch, (self.db, self.cb),
                                    lt.own_routes, self.tokens_from)
        layer.combine = _Transfer(run, lt.dispatch.mirror(), self.cb, True,
                                  layer.combine_arrived, now, c_work)
        layer.remaining = int((lt.routes_on > 0).sum()) + layer.combine.deliveries
        layer.dispatch = _Transfer(run, lt.dispatch, self.db, False, layer.dispatch_arrived, now,
                                   d_work)
        idle = _nonzero((lt.routes_on > 0) & (lt.dispatch.delivered_to(run.g) == 0))
        if idle.size:
            layer.start_compute(idle, now)
        if layer.remaining == 0:
            run.unregister(layer.slot)
            self.layer_done(layer, now)

    def layer_done(self, layer: _Layer, now: float) -> None:
        run, m = self.run, self.block.model
        self.latency_s += layer.done_at[self.origins] - layer.t0
        times = LayerTimes(
            self.index, m.moe_layer_indices[self.li], layer.t0, layer.dispatch_done,
            layer.compute_start, layer.compute_done, layer.combine.first_start, now,
        )
        run.layer_rows.append(times.layer_row())
        run.phase_rows += times.phase_rows()
        self.previous_s = now - layer.t0
        self.li += 1
        if self.li < m.num_moe_layers:
            self.start_layer(now)
            return
        run.token_parts.append(token_frame(self.index, self.block, self.origins, self.latency_s))
        run.finished += 1
        run.launch(now)


class _FlowRun:
    """State of one flow-mode replay."""

    def __init__(self, routes: RouteTable, expert_gpus: np.ndarray, config: SimConfig,
                 blocks: Iterator[RoutingTrace], first: int = 0) -> None:
        self.routes = routes
        self.expert_gpus = expert_gpus
        self.config = config
        self.g = routes.num_gpus
        traffic = config.traffic
        fabric = flow_fabric(routes, traffic)
        self.multipath = fabric.multipath
        check_scheme(traffic.dispatch, self.multipath.endpoints, routes.cluster.name)
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s = fabric.bandwidth_bytes_per_s
        self.link_class = fabric.link_class
        self.paths = fabric.paths
        tol = config.flow_tolerance
        self.tolerance = DEFAULT_FLOW_TOLERANCE if tol is None else tol
        self.net = FluidNet(self.paths, bandwidth_bytes_per_s.size, config.chunk_bytes,
                            self.tolerance)
        self.pool = _Pool()
        self.owners: dict[int, Any] = {}  # _Transfer, _Layer or a background migration
        self.layers: dict[int, _Layer] = {}
        self._next_slot = 0
        self._started_batches = 0
        self.gpu_free = np.zeros(self.g)
        self.gpu_busy = np.zeros(self.g)
        self.gpu_routes = np.zeros(self.g, dtype=np.int64)
        self.layer_rows: list[tuple] = []
        self.phase_rows: list[tuple] = []
        self.token_parts: list = []
        self.hops = 0.0
        self.tokens = 0
        self.copies = CopyTally()
        self.first = first
        self.blocks = enumerate(blocks, start=first)
        self.started = self.finished = 0
        self.now = 0.0

    def register(self, owner: Any) -> int:
        slot = self._next_slot
        self._next_slot += 1
        self.owners[slot] = owner
        return slot

    def start_order(self) -> int:
        """The next number in the order batches of flows start: their priority."""
        self._started_batches += 1
        return self._started_batches

    def unregister(self, slot: int) -> None:
        self.owners.pop(slot, None)
        self.layers.pop(slot, None)

    def time_scale(self, now: float) -> float:
        """The time scale of the events now: the shortest of the running layers' scales."""
        return min((la.time_scale(now) for la in self.layers.values()), default=0.0)

    def launch(self, now: float) -> None:
        """Start micro-batches while fewer than ``inflight_microbatches`` run."""
        while self.started - self.finished < self.config.inflight_microbatches:
            nxt = next(self.blocks, None)
            if nxt is None:
                return
            self.started += 1
            _Microbatch(self, nxt[0], nxt[1], now)

    def run(self) -> None:
        net, pool, tol = self.net, self.pool, self.tolerance
        self.launch(0.0)
        now = 0.0
        while True:
            net.update_rates(now)
            t_fin = net.finish_times(now)
            t = min(t_fin.min(initial=np.inf), pool.next_time())
            if t == np.inf:
                break
            t = max(t, now)
            # merge the events within the quantum; handle them at the middle of their span
            until = t + tol * self.time_scale(t)
            last = max(t_fin[t_fin <= until].max(initial=t), pool.t[pool.t <= until].max(initial=t))
            t_proc = max(now, 0.5 * (t + last))
            owner, msg, arrival, _ = net.complete(now, t_proc, until, t_fin)
            now = t_proc
            pool.push(arrival, ARRIVAL, owner, msg)
            ev = pool.pop_due(until)
            if ev.shape[0] == 0:
                continue
            # by kind (arrivals, computes, deliveries), then owner, then the order pushed
            key = ev[:, 0] * (self._next_slot + 1) + ev[:, 1]
            order = key.argsort(kind="stable")
            key, ev = key[order], ev[order]
            cuts = [0, *((key[1:] != key[:-1]).nonzero()[0] + 1).tolist(), key.size]
            item = ev[:, 2]
            heads = ev[cuts[:-1], :2].tolist()
            for (k, o), lo, hi in zip(heads, cuts[:-1], cuts[1:], strict=True):
                target = self.owners[o]
                if k == ARRIVAL:
                    target.arrived(item[lo:hi], now)  # type: ignore[union-attr]
                elif k == DELIVERY:
                    target.delivered(item[lo:hi], now)  # type: ignore[union-attr]
                else:
                    target.computed(item[lo:hi], now)  # type: ignore[union-attr]
        self.now = now

    def part(self) -> FlowPart:
        """Run to the end; what the run recorded (:mod:`simulator.flow_parts`)."""
        self.run()
        if self.finished != self.started:  # an internal error, never bad input
            raise RuntimeError(f"flow mode: {self.started - self.finished} micro-batch(es)"
                               " never finished")
        net = self.net
        load = net.load_records(self.now)
        return FlowPart(
            self.first, self.started, self.tokens, self.now, net.link_units, net.link_bytes,
            net.link_chunks, net.queue_sum_s, net.queue_max_s, *load,
            self.layer_rows, self.phase_rows, self.token_parts, self.gpu_busy,
            self.gpu_routes, self.hops, self.copies)


def flow_microbatch(mb: int, block: RoutingTrace, routes: RouteTable, expert_gpus: np.ndarray,
                    config: SimConfig) -> FlowPart:
    """Micro-batch ``mb`` replayed alone on the idle network from time 0 (``expert_gpus``:
    [layers, experts, replicas]): its part of a run with one micro-batch in flight."""
    validate_layout(expert_gpus, block.model, routes.num_gpus)
    return _FlowRun(routes, expert_gpus, config, iter([block]), mb).part()


def simulate_flow(
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: SimConfig | None = None,
    background: Callable[[_FlowRun], None] | None = None,
) -> SimResult:
    """Replay a trace in flow mode (module docstring); the same result as :func:`simulate`.
    ``background(run)`` starts strict low-priority flows at time 0 (expert-weight migration,
    :class:`simulator.migration.FlowBackgroundMigration`); it may switch ``run.expert_gpus``.
    With one micro-batch in flight and no background, each micro-batch is replayed on its own
    and the parts added up (:mod:`simulator.flow_parts`), as a split run does."""
    config = config or SimConfig(mode="flow")
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    validate_links(routes)
    stream = replay_stream(blocks, routes, expert_gpus, config)
    if config.inflight_microbatches == 1 and background is None:
        parts: Iterable[FlowPart] = (flow_microbatch(mb, b, routes, expert_gpus, config)
                                     for mb, b in enumerate(stream))
    else:
        run = _FlowRun(routes, expert_gpus, config, stream)
        if background is not None:
            background(run)
        parts = [run.part()]
    return flow_result(parts, routes, config)


def flow_result(parts: Iterable[FlowPart], routes: RouteTable, config: SimConfig) -> SimResult:
    """The replay's result from its parts in micro-batch order."""
    fabric = flow_fabric(routes, config.traffic)
    frames = combine_flow_parts(parts, routes, config, fabric.link_class,
                                fabric.multipath.share_denominator)
    return SimResult(**frame_fields(frames), config=config)
