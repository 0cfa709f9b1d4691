"""The discrete-event replay (SimPy).  Time unit: seconds (float).

Lifecycle of :func:`simulate`: build the environment and one :class:`LinkDirection` per link
direction and one :class:`Gpu` per GPU from the cluster -> start a launcher that keeps
``inflight_microbatches`` micro-batches running -> run -> collect counters into frames.

Per micro-batch and MoE layer (layers in order):

1. *dispatch*: routes are aggregated per (origin GPU, host GPU); each message is cut into
   chunks of at most ``chunk_bytes`` that follow the pair's route hop by hop, so a message
   pipelines across hops.  Routes whose expert sits on the origin GPU move nothing.
2. *compute*: a GPU starts its experts once every dispatch message for it has arrived; it
   takes ``routes x expert_time_per_route_s`` (FIFO with other micro-batches).
3. *combine*: each GPU sends results back to the origins as soon as its compute is done.
   The layer ends when every combine message has arrived; the next layer then starts.

A token's latency at a layer is the time from the layer's start until the last of its routes
is back at its origin; its MoE latency is the sum over layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import simpy

from simulator.components import Gpu, LinkDirection
from simulator.paths import RouteTable
from simulator.traffic import (
    TrafficConfig,
    pair_counts,
    resolve_hosts,
    resolve_origins,
    validate_layout,
)
from traces.errors import InputError
from traces.trace import RoutingTrace

TIME_UNIT = "s"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Run knobs of the replay."""

    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    chunk_bytes: int = field(
        default=1 << 20, metadata={"help": "Messages are cut into chunks of this size."}
    )
    inflight_microbatches: int = field(
        default=2, metadata={"help": "Micro-batches in flight at once (overlap)."}
    )
    gpu_flops_per_s: float = field(
        default=400e12, metadata={"help": "Effective expert GEMM rate of one GPU."}
    )
    expert_time_per_route_s: float | None = field(
        default=None,
        metadata={"help": "Compute time per routed token per expert; default from FLOPs."},
    )

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1:
            raise InputError("simulate: chunk_bytes must be >= 1")
        if self.inflight_microbatches < 1:
            raise InputError("simulate: inflight_microbatches must be >= 1")
        if not (np.isfinite(self.gpu_flops_per_s) and self.gpu_flops_per_s > 0):
            raise InputError("simulate: gpu_flops_per_s must be > 0")
        t = self.expert_time_per_route_s
        if t is not None and not (np.isfinite(t) and t >= 0):
            raise InputError("simulate: expert_time_per_route_s must be >= 0")

    def route_compute_s(self, hidden: int, intermediate: int) -> float:
        """Expert time per route: given, or 3 GEMMs (gate, up, down) = 6*hidden*inter FLOPs."""
        if self.expert_time_per_route_s is not None:
            return self.expert_time_per_route_s
        inter = intermediate or hidden
        return 6.0 * hidden * inter / self.gpu_flops_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class SimResult:
    """Frames of one replay, with the configuration that produced them."""

    links: pd.DataFrame  # per link direction
    layers: pd.DataFrame  # per (microbatch, layer)
    tokens: pd.DataFrame  # per token
    summary: dict[str, float]
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
        self.g = routes.num_gpus
        self.links = [
            LinkDirection(env, lk.bandwidth_bytes_per_s, lk.latency_s)
            for lk in routes.cluster.links
            for _ in (0, 1)
        ]
        self.gpus = [Gpu(env) for _ in range(self.g)]
        self.gpu_server = routes.cluster.gpu_server
        self.layer_rows: list[tuple] = []
        self.token_parts: list[pd.DataFrame] = []
        self.hops = 0.0
        self.tokens = 0

    def send_message(self, path: np.ndarray, nbytes: int, on_done: simpy.Event) -> None:
        """Send nbytes along ``path`` (directed link ids) in chunks; succeed on_done at arrival."""
        chunk = self.config.chunk_bytes
        sizes = [chunk] * (nbytes // chunk)
        if nbytes % chunk:
            sizes.append(nbytes % chunk)
        remaining = [len(sizes)]
        links = self.links
        hops = [int(x) for x in path]
        last = len(hops) - 1

        def forward(size: int, hop: int) -> None:
            def arrived(_: simpy.Event) -> None:
                if hop == last:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        on_done.succeed()
                else:
                    forward(size, hop + 1)

            links[hops[hop]].send(size, arrived)

        for s in sizes:
            forward(s, 0)

    def _after(self, events: list[simpy.Event], action: Callable[[], None]) -> None:
        """Run ``action`` once every event in ``events`` has happened (now if none).

        A countdown on the events' callbacks: much cheaper than SimPy's ``AllOf`` condition.
        """
        pending = [e for e in events if not e.processed]
        if not pending:
            action()
            return
        left = [len(pending)]

        def one(_e: simpy.Event) -> None:
            left[0] -= 1
            if left[0] == 0:
                action()

        for e in pending:
            e.callbacks.append(one)

    def transfer_phase(
        self, nbytes: np.ndarray, src_ready: list[simpy.Event | None]
    ) -> list[simpy.Event | None]:
        """Move ``nbytes[a, b]`` from every GPU a to every GPU b != a in three stages.

        1. uplink: one message per source GPU to its server node (all it sends), once the
           source is ready;
        2. middle: one message per (source server, destination server) along their shared
           route, once every uplink message carrying bytes for that server has arrived;
        3. downlink: one message per destination GPU from its server node, once every uplink
           (same server) and middle message carrying bytes for it has arrived.

        Returns, per destination GPU, the event of its downlink arrival (None: receives nothing).
        Per-link bytes equal the per-pair route count exactly: every pair's bytes cross its
        uplink, its servers' middle route and its downlink once.
        """
        env = self.env
        g = self.g
        gs = self.gpu_server
        ns = self.routes.num_servers
        nb = nbytes.copy()
        np.fill_diagonal(nb, 0)
        out_bytes = nb.sum(axis=1)
        in_bytes = nb.sum(axis=0)
        up_done: list[simpy.Event | None] = [None] * g
        for a in np.flatnonzero(out_bytes):
            a = int(a)
            ev = env.event()
            up_done[a] = ev
            path = self.routes.gpu_uplink[a : a + 1]
            nbytes_a = int(out_bytes[a])
            ready = src_ready[a]
            self._after(
                [ready] if ready is not None else [],
                lambda path=path, n=nbytes_a, ev=ev: self.send_message(path, n, ev),
            )
        server_bytes = np.zeros((ns, ns), dtype=np.int64)
        np.add.at(server_bytes, (gs[:, None], gs[None, :]), nb)
        # which servers send to which GPU / server
        to_server = np.zeros((g, ns), dtype=bool)  # GPU a has bytes for server B
        for b_server in range(ns):
            to_server[:, b_server] = nb[:, gs == b_server].sum(axis=1) > 0
        mid_done: dict[tuple[int, int], simpy.Event] = {}
        for sa, sb in zip(*np.nonzero(server_bytes), strict=True):
            sa, sb = int(sa), int(sb)
            if sa == sb:
                continue
            ev = env.event()
            mid_done[(sa, sb)] = ev
            senders = [up_done[a] for a in np.flatnonzero((gs == sa) & to_server[:, sb])]
            path = self.routes.middle(sa, sb)
            n = int(server_bytes[sa, sb])
            self._after(
                [e for e in senders if e is not None],
                lambda path=path, n=n, ev=ev: self.send_message(path, n, ev),
            )
        down_done: list[simpy.Event | None] = [None] * g
        for b in np.flatnonzero(in_bytes):
            b = int(b)
            ev = env.event()
            down_done[b] = ev
            col = nb[:, b]
            local = np.flatnonzero((gs == gs[b]) & (col > 0))
            inputs = [up_done[int(a)] for a in local]
            remote_servers = np.unique(gs[np.flatnonzero((gs != gs[b]) & (col > 0))])
            inputs += [mid_done[(int(sa), int(gs[b]))] for sa in remote_servers]
            path = self.routes.gpu_downlink[b : b + 1]
            n = int(in_bytes[b])
            self._after(
                [e for e in inputs if e is not None],
                lambda path=path, n=n, ev=ev: self.send_message(path, n, ev),
            )
        return down_done

    def microbatch(self, mb: int, block: RoutingTrace) -> Iterator[simpy.Event]:
        env = self.env
        m = block.model
        db, cb = self.config.traffic.route_bytes(m)
        t_route = self.config.route_compute_s(
            self.config.traffic.hidden_size or m.hidden_size, m.moe_intermediate_size
        )
        origins = resolve_origins(block, self.g)
        hosts = resolve_hosts(block.experts, origins, self.expert_gpus, self.routes.distance)
        self.hops += float(self.routes.distance[origins[:, None, None], hosts].sum()) * 2
        self.tokens += block.num_tokens
        latency = np.zeros(block.num_tokens)
        for li in range(m.num_moe_layers):
            t0 = env.now
            counts = pair_counts(origins, hosts[:, li, :], self.g)
            arrived = self.transfer_phase(counts * db, [None] * self.g)
            routes_on = counts.sum(axis=0)
            compute_done: list[simpy.Event | None] = [None] * self.g
            dispatch_t = [t0]
            compute_t = [t0]
            for b in np.flatnonzero(routes_on):
                b = int(b)
                ev = env.event()
                compute_done[b] = ev

                def start_compute(b: int = b, ev: simpy.Event = ev) -> None:
                    dispatch_t[0] = max(dispatch_t[0], env.now)

                    def finished(_e: simpy.Event) -> None:
                        compute_t[0] = max(compute_t[0], env.now)
                        ev.succeed()

                    self.gpus[b].compute(int(routes_on[b]) * t_route, finished)

                ready = arrived[b]
                self._after([ready] if ready is not None else [], start_compute)
            back = self.transfer_phase(counts.T * cb, compute_done)
            # a GPU's combine is complete when its downlink arrived and its own experts finished
            finals = [e for e in back + compute_done if e is not None]
            done_at = np.full(self.g, float(t0))
            for a in range(self.g):
                for e in (back[a], compute_done[a] if counts[a, a] else None):
                    if e is not None:
                        e.callbacks.append(
                            lambda _e, a=a: done_at.__setitem__(a, max(done_at[a], env.now))
                        )
            layer_end = env.event()
            self._after(finals, layer_end.succeed)
            yield layer_end
            t1 = env.now
            latency += done_at[origins] - t0
            self.layer_rows.append(
                (mb, m.moe_layer_indices[li], t0, dispatch_t[0], compute_t[0], t1, t1 - t0)
            )
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

    def launcher(self, blocks: Iterable[RoutingTrace]) -> Iterator[simpy.Event]:
        slots = simpy.Resource(self.env, capacity=self.config.inflight_microbatches)

        def run_one(mb: int, block: RoutingTrace, req: simpy.Event) -> Iterator[simpy.Event]:
            yield from self.microbatch(mb, block)
            slots.release(req)

        for mb, block in enumerate(blocks):
            req = slots.request()
            yield req
            self.env.process(run_one(mb, block, req))


def simulate(
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: SimConfig | None = None,
) -> SimResult:
    """Replay a trace (one block per micro-batch) through the cluster for one layout."""
    config = config or SimConfig()
    expert_gpus = np.asarray(expert_gpus, dtype=np.int64)
    if expert_gpus.ndim == 2:
        expert_gpus = expert_gpus[:, :, None]
    env = simpy.Environment()
    run = _Run(routes, expert_gpus, config, env)

    def checked(bs: Iterable[RoutingTrace]) -> Iterator[RoutingTrace]:
        for b in bs:
            validate_layout(expert_gpus, b.model, routes.num_gpus)
            yield b

    env.process(run.launcher(checked(blocks)))
    env.run()
    return _collect(run, config)


def _collect(run: _Run, config: SimConfig) -> SimResult:
    cluster = run.routes.cluster
    makespan = run.env.now
    rows = []
    for i, lk in enumerate(cluster.links):
        for d, (src, dst) in enumerate(((lk.a, lk.b), (lk.b, lk.a))):
            ld = run.links[2 * i + d]
            rows.append(
                (2 * i + d, i, src, dst, lk.tier, lk.weight, ld.nbytes, ld.chunks, ld.busy_s,
                 ld.busy_s / makespan if makespan > 0 else 0.0,
                 ld.queue_sum_s / ld.chunks if ld.chunks else 0.0, ld.queue_max_s)
            )
    links = pd.DataFrame(
        rows,
        columns=["link_dir", "link", "src", "dst", "tier", "weight", "bytes", "chunks",
                 "busy_s", "utilisation", "mean_queue_delay_s", "peak_queue_delay_s"],
    )
    layers = pd.DataFrame(
        run.layer_rows,
        columns=["microbatch", "layer", "start_s", "dispatch_done_s", "compute_done_s",
                 "finish_s", "duration_s"],
    )
    tokens = (
        pd.concat(run.token_parts, ignore_index=True)
        if run.token_parts
        else pd.DataFrame(columns=["microbatch", "seq_id", "position", "origin_gpu",
                                   "moe_latency_s"])
    )
    net = links["weight"] > 0
    lat = tokens["moe_latency_s"].to_numpy(dtype=float)
    summary = {
        "tokens": float(run.tokens),
        "hops_per_token": run.hops / run.tokens if run.tokens else 0.0,
        "network_link_bytes": float(links.loc[net, "bytes"].sum()),
        "nvlink_bytes": float(links.loc[~net, "bytes"].sum()),
        "max_link_utilisation": float(links["utilisation"].max()) if len(links) else 0.0,
        "makespan_s": makespan,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else 0.0,
        "latency_p99_s": float(np.percentile(lat, 99)) if lat.size else 0.0,
    }
    return SimResult(links=links, layers=layers, tokens=tokens, summary=summary, config=config)
