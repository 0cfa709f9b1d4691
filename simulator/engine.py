"""The discrete-event replay (SimPy).  Time unit: seconds (float).

Lifecycle of :func:`simulate`: build the environment, one :class:`LinkDirection` per link
direction and one :class:`Gpu` per GPU from the cluster -> start a launcher that keeps
``inflight_microbatches`` micro-batches running (pulling blocks from the stream only when a
slot frees) -> run -> build frames (:mod:`simulator.summaries`).

Per micro-batch and MoE layer (layers in order):

1. *dispatch* in three aggregated stages: one uplink message per source GPU (to its server
   node), one message per (source server, destination server) along their shared route once
   every uplink carrying data for it has arrived, one downlink message per destination GPU
   once its inputs (local uplinks, middle messages) have arrived.  Messages are cut into
   chunks of at most ``chunk_bytes`` that pipeline across the hops of their stage.  Copies per
   stage come from :func:`simulator.traffic.dispatch_stages` (with or without server-level
   de-duplication).  Routes whose expert sits on the origin GPU move nothing.
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
from simpy.events import NORMAL

from simulator.cluster.paths import RouteTable
from simulator.components import BusyLog, Gpu, LinkDirection, Wakeup
from simulator.config import SimConfig
from simulator.microbatches import by_tokens
from simulator.summaries import RunRecords, SimFrames, collect_sim
from simulator.traffic import (
    CopyTally,
    StageCopies,
    dispatch_stages,
    pair_counts,
    remote_copies,
    resolve_hosts_layer,
    resolve_origins,
    stages_from_pairs,
    validate_layout,
)
from traces.infra.errors import InputError
from traces.trace import RoutingTrace

TIME_UNIT = "s"


@dataclass(frozen=True, eq=False)
class SimResult(SimFrames):
    """Frames of one replay (:class:`SimFrames`), with the configuration that produced them."""

    config: SimConfig


class _Train:
    """One message moving hop by hop; one event per hop (its first chunk's arrival).

    The chunks travel as a uniform train (first arrival ``a``, spacing ``s``, last arrival
    ``z``) while the links allow the closed form, else as an explicit list of arrival times.
    ``a`` is also the simulated time at which the next hop's event fires.  A train has at most
    one pending event, so it reuses one :class:`Wakeup` (SimPy clears ``callbacks`` when it
    processes an event; the train puts its own list back before rescheduling).
    """

    __slots__ = (
        "path", "hop", "n", "c", "r", "a", "s", "z", "arrivals", "wake", "schedule",
        "next_hop", "done",
    )

    def __init__(
        self,
        env: simpy.Environment,
        path: list[LinkDirection],
        nbytes: int,
        chunk: int,
        on_done: Callable[[Any], None],
    ) -> None:
        self.path = path
        self.hop = 0
        n = -(-nbytes // chunk)
        self.n = n
        self.c = chunk
        self.r = nbytes - (n - 1) * chunk
        now = float(env.now)
        self.a = now
        self.s = 0.0
        self.z = now
        self.arrivals: list[float] | None = None
        self.schedule = env.schedule
        self.next_hop: list[Callable[[Any], None]] = [self.step]
        self.done = [on_done]
        self.wake = Wakeup(on_done)
        self.step(None)

    def _sizes(self) -> list[int]:
        return [self.c] * (self.n - 1) + [self.r]

    def step(self, _ev: Any) -> None:
        link = self.path[self.hop]
        if self.arrivals is None:
            now = self.a
            out = link.reserve_uniform(now, self.s, self.n, self.z, self.c, self.r)
            if out is not None:
                first, self.s, last = out
                self.a = first
                self.z = last
                self._advance(now, first, last)
                return
            arr = [now + j * self.s for j in range(self.n - 1)] + [self.z]
            self.arrivals = link.reserve(arr, self._sizes())
        else:
            now = self.arrivals[0]
            self.arrivals = link.reserve(self.arrivals, self._sizes())
        self._advance(now, self.arrivals[0], self.arrivals[-1])

    def _advance(self, now: float, first: float, last: float) -> None:
        """Move to the next hop: wake when the first chunk arrives there, or, after the last
        hop, when the last chunk has arrived."""
        self.hop += 1
        wake = self.wake
        if self.hop == len(self.path):
            wake.callbacks = self.done
            self.schedule(wake, NORMAL, last - now)  # type: ignore[arg-type]
        else:
            wake.callbacks = self.next_hop
            self.schedule(wake, NORMAL, first - now)  # type: ignore[arg-type]


class _Transfer:
    """One phase's three-stage transfer (see the module docstring).

    Message ids: uplink of GPU a is ``a``; middle (s, t) is ``g + s*ns + t``; downlink of GPU b
    is ``g + ns*ns + b``.  Each message waits for a countdown of the messages feeding it.
    """

    __slots__ = (
        "run", "nbytes", "pending", "dep_off", "dep_ids", "on_delivered", "first_start",
        "deliveries",
    )

    def __init__(
        self,
        run: _Run,
        copies: StageCopies,
        bytes_per_copy: int,
        gated: bool,
        on_delivered: Callable[[int], None],
    ) -> None:
        self.run = run
        g, ns, gs = run.g, run.ns, run.gpu_server
        up_total = copies.up.sum(axis=1) * bytes_per_copy
        mid = copies.mid * bytes_per_copy
        down_total = copies.down.sum(axis=0) * bytes_per_copy
        self.nbytes = np.concatenate([up_total, mid.ravel(), down_total]).tolist()
        n = g + ns * ns + g
        # edges uplink -> middle, uplink -> downlink (same server), middle -> downlink
        ua, us = np.nonzero(copies.up)
        remote = us != gs[ua]
        la, lb = np.nonzero(copies.local)
        ds, db = np.nonzero(copies.down)
        dremote = ds != gs[db]
        src = np.concatenate([ua[remote], la, g + ds[dremote] * ns + gs[db[dremote]]])
        dst = np.concatenate(
            [g + gs[ua[remote]] * ns + us[remote], g + ns * ns + lb, g + ns * ns + db[dremote]]
        )
        order = np.argsort(src, kind="stable")
        self.dep_ids = dst[order].tolist()
        self.dep_off = np.searchsorted(src[order], np.arange(n + 1)).tolist()
        pending = np.bincount(dst, minlength=n)
        if gated:
            pending[:g] += up_total > 0
        self.pending = pending.tolist()
        self.on_delivered = on_delivered
        self.first_start = -1.0
        self.deliveries = int((down_total > 0).sum())
        for a in np.flatnonzero((up_total > 0) & (pending[:g] == 0)).tolist():
            self._start(a)

    def release(self, a: int) -> None:
        """The gate of GPU a's uplink opened (its compute finished)."""
        if self.nbytes[a] > 0:
            self._count_down(a)

    def _count_down(self, i: int) -> None:
        p = self.pending[i] - 1
        self.pending[i] = p
        if p == 0:
            self._start(i)

    def _start(self, i: int) -> None:
        run = self.run
        if self.first_start < 0:
            self.first_start = run.env.now
        def arrived(_e: Any, i: int = i) -> None:
            self._arrived(i)

        _Train(run.env, run.paths[i], self.nbytes[i], run.chunk, arrived)

    def _arrived(self, i: int) -> None:
        pending = self.pending
        for j in self.dep_ids[self.dep_off[i] : self.dep_off[i + 1]]:
            p = pending[j] - 1
            pending[j] = p
            if p == 0:
                self._start(j)
        b = i - self.run.g - self.run.ns * self.run.ns
        if b >= 0:
            self.on_delivered(b)


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
        self.links = [
            LinkDirection(env, 2 * i + d, lk.bandwidth_bytes_per_s, lk.latency_s, self.log)
            for i, lk in enumerate(routes.cluster.links)
            for d in (0, 1)
        ]
        ns = self.ns
        self.paths: list[list[LinkDirection]] = (
            [[self.links[int(x)]] for x in routes.gpu_uplink]
            + [
                [self.links[int(x)] for x in routes.middle(s, t)] if s != t else []
                for s in range(ns)
                for t in range(ns)
            ]
            + [[self.links[int(x)]] for x in routes.gpu_downlink]
        )
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

    def records(self) -> RunRecords:
        """What the finished run recorded, as plain values for :mod:`simulator.summaries`."""
        lds = self.links
        stats = {
            name: np.array([getattr(ld, attr) for ld in lds], dtype=dtype)
            for name, attr, dtype in (
                ("link_bytes", "nbytes", np.int64), ("link_chunks", "chunks", np.int64),
                ("link_busy_s", "busy_s", np.float64),
                ("link_queue_sum_s", "queue_sum_s", np.float64),
                ("link_queue_max_s", "queue_max_s", np.float64),
            )
        }
        for ld in lds:
            ld.flush()  # the open busy periods go to the log
        log = self.log
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
            server_dedup=bool(self.config.traffic.server_dedup),
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
        distance = self.routes.distance
        origins = resolve_origins(block, g)
        self.tokens += block.num_tokens
        latency = np.zeros(block.num_tokens)
        for li in range(m.num_moe_layers):
            t0 = float(env.now)
            hosts = resolve_hosts_layer(
                block.experts[:, li, :], origins, self.expert_gpus[li], distance
            )
            pairs = pair_counts(origins, hosts, g)
            self.hops += float((pairs * distance).sum()) * 2
            self.copies.add(remote_copies(origins, hosts, self.gpu_server), block.num_tokens,
                            db + cb)
            if traffic.server_dedup:
                dispatch = dispatch_stages(origins, hosts, self.gpu_server, True)
            else:
                dispatch = stages_from_pairs(pairs, self.gpu_server)
            routes_on = pairs.sum(axis=0)
            self.gpu_routes += routes_on
            layer = _Layer(self, t0, routes_on, pairs.diagonal() > 0, t_route)
            layer.combine = _Transfer(self, dispatch.mirror(), cb, True, layer.combine_arrived)
            layer.remaining = int((routes_on > 0).sum()) + layer.combine.deliveries
            layer.dispatch = _Transfer(self, dispatch, db, False, layer.dispatch_arrived)
            for b in np.flatnonzero((routes_on > 0) & (copies_in(dispatch) == 0)).tolist():
                layer.start_compute(b)
            if layer.remaining == 0:
                layer.end.succeed()
            yield layer.end
            t1 = env.now
            latency += layer.done_at[origins] - t0
            layer_index = m.moe_layer_indices[li]
            self.layer_rows.append(
                (mb, layer_index, t0, layer.dispatch_done, layer.compute_done, t1, t1 - t0)
            )
            comp_start = layer.compute_start if layer.compute_start >= 0 else t0
            comb_start = layer.combine.first_start
            if comb_start < 0:
                comb_start = t1
            self.phase_rows += [
                (mb, layer_index, "dispatch", t0, layer.dispatch_done),
                (mb, layer_index, "compute", comp_start, layer.compute_done),
                (mb, layer_index, "combine", comb_start, t1),
            ]
        self.token_parts.append(
            pd.DataFrame(
                {
                    "microbatch": np.full(block.num_tokens, mb, dtype=np.int64),
                    "seq_id": block.seq_id,
                    "position": block.position,
                    "origin_gpu": origins,
                    "moe_latency_s": latency,
                }
            )
        )

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


def copies_in(copies: StageCopies) -> np.ndarray:
    """Copies arriving at each GPU in a phase, [gpus]."""
    return copies.down.sum(axis=0)


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
        self.combine: _Transfer
        self.dispatch: _Transfer

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
) -> SimResult:
    """Replay a trace through the cluster for one layout.

    Each block is one micro-batch unless ``config.microbatch_tokens`` re-cuts the stream.
    Blocks are pulled lazily, so a streamed trace is never held in memory as a whole.
    """
    config = config or SimConfig()
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    validate_links(routes)
    env = simpy.Environment()
    run = _Run(routes, expert_gpus, config, env)

    def checked(bs: Iterable[RoutingTrace]) -> Iterator[RoutingTrace]:
        for b in bs:
            validate_layout(expert_gpus, b.model, routes.num_gpus)
            yield b

    stream = blocks if config.microbatch_tokens is None else by_tokens(
        blocks, config.microbatch_tokens
    )
    env.process(run.launcher(checked(stream)))
    env.run()
    if run.finished != run.started:  # an internal error, never bad input
        raise RuntimeError(
            f"simulate: {run.started - run.finished} micro-batch(es) never finished"
        )
    frames = collect_sim(run.records())
    return SimResult(**{f.name: getattr(frames, f.name) for f in fields(SimFrames)},
                     config=config)


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
