"""One window of a rebalancing replay: the migration that opens it and the metrics of the
tokens replayed under its layout (one timeline row of :func:`experiments.rebalance.run_rebalance`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from experiments.rebalance_config import RebalanceConfig
from placement import ExpertLayout
from simulator.cluster.paths import RouteTable
from simulator.traffic import remote_copies, resolve_hosts_layer
from simulator.traffic_config import TrafficConfig
from traces.origins import resolve_origins
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class Migration:
    """One rebalance's moves: (source, destination) GPU per move, bytes each, how they move."""

    moves: tuple[np.ndarray, np.ndarray]
    weight_bytes: float
    mode: str  # stall or async
    old: ExpertLayout


def sim_config(server_dedup: bool):  # noqa: ANN202 - SimConfig (imported lazily)
    from simulator.config import SimConfig

    return SimConfig(traffic=TrafficConfig(
        dispatch="deepep-normal" if server_dedup else "all-to-all"))


class WindowMetrics:
    """Metrics of the tokens replayed under one layout, accumulated block by block.

    Remote copies: distinct (token, server) pairs of a layer other than the token's origin
    server (de-duplicated dispatch: one network copy each way); remote routes: routes whose host
    is on another server (one copy per route).  A remote copy puts dispatch bytes on the
    origin server's uplink and combine bytes on the host server's: network bytes = copies x
    (dispatch + combine) bytes, the analytic counter's rule (a test checks it).
    """

    def __init__(self, routes: RouteTable, layout: ExpertLayout, keep_blocks: bool) -> None:
        self.routes, self.eg = routes, layout.expert_gpus
        self.blocks: list[RoutingTrace] | None = [] if keep_blocks else None
        self.tokens, self.copies, self.remote_routes, self.hops = 0, 0, 0, 0.0
        self.load = np.zeros(routes.num_gpus)
        self.route_bytes = 0.0

    def add(self, block: RoutingTrace) -> None:
        routes, gs = self.routes, self.routes.cluster.gpu_server
        origins = resolve_origins(block, routes.num_gpus)
        m = block.model
        db, cb = TrafficConfig().route_bytes(m)
        self.route_bytes = float(db + cb)
        for li in range(m.num_moe_layers):
            hosts = resolve_hosts_layer(block.experts[:, li, :], origins, self.eg[li],
                                        routes.gpu_distance)
            self.load += np.bincount(hosts.ravel(), minlength=routes.num_gpus)
            self.hops += 2.0 * float(routes.gpu_distance[origins[:, None], hosts].sum())
            rc = remote_copies(origins, hosts, gs)  # the one de-duplication rule
            self.remote_routes += rc.routes
            self.copies += rc.dedup
        self.tokens += block.num_tokens
        self.layers = m.num_moe_layers
        if self.blocks is not None:
            self.blocks.append(block)

    def latency(self, server_dedup: bool, mode: str, migration: Migration | None = None
                ) -> dict[str, float]:
        """The window replayed (``mode``: des or flow), one micro-batch per step: MoE latency
        percentiles.

        With an ``async`` migration the window starts on the old layout with the moves in
        flight beside it (:class:`simulator.migration.BackgroundMigration`), and is replayed
        once more without them for the latency they cost."""
        from simulator.migration import BackgroundMigration, FlowBackgroundMigration
        from simulator.replay import replay

        assert self.blocks is not None
        config = replace(sim_config(server_dedup), mode=mode)
        keys = ("latency_p50_s", "latency_p99_s")
        res = replay(self.blocks, self.routes, self.eg, config)
        out = {k: float(res.summary[k]) for k in keys}
        if migration is not None and migration.mode == "async":
            kind = FlowBackgroundMigration if mode == "flow" else BackgroundMigration
            bg = kind(migration.moves, migration.weight_bytes, self.eg)
            busy = replay(self.blocks, self.routes, migration.old.expert_gpus, config,
                          background=bg.start)
            out = {**{k: float(busy.summary[k]) for k in keys},
                   **{f"{k}_without_migration": v for k, v in out.items()},
                   "migration_s": bg.done_s}
        return out

    def row(self, server_dedup: bool) -> dict[str, float]:
        n = max(self.tokens, 1)
        dedup, plain = self.copies * self.route_bytes, self.remote_routes * self.route_bytes
        return {
            "tokens": float(self.tokens),
            "network_bytes": dedup if server_dedup else plain,
            "network_bytes_dedup": dedup,
            "network_bytes_no_dedup": plain,
            "remote_copies_per_token_layer": self.copies / (n * self.layers),
            "hops_per_token": self.hops / n,
            "gpu_load_max_over_mean": float(self.load.max() / self.load.mean())
            if self.load.mean() else 1.0,
        }


def no_moves(config: RebalanceConfig) -> dict[str, float]:
    cols = {"bytes_migrated": 0.0, "stall_s": 0.0, "stall_bound_s": 0.0}
    if config.mode == "des":
        cols["stall_des_s"] = 0.0
    return cols


def moves_columns(routes: RouteTable, config: RebalanceConfig, migration: Migration,
           per_link: np.ndarray) -> dict[str, float]:
    """Migration columns of a rebalance: bytes, the stall's lower bound (busiest link) and,
    in DES mode, the stall measured in the simulator (the moves alone on the idle network;
    the pause of ``stall``, the reference of ``async``); ``stall_s`` is the pause serving
    takes: 0 for ``async``, else the DES stall (the bound in analytic mode)."""
    from simulator.migration import stall_lower_bound_s, stall_time_s

    cols = {"bytes_migrated": len(migration.moves[0]) * migration.weight_bytes,
            "stall_bound_s": stall_lower_bound_s(routes, per_link)}
    if config.mode == "des":
        cols["stall_des_s"] = stall_time_s(routes, migration.moves, migration.weight_bytes,
                                           sim_config(config.server_dedup))
    cols["stall_s"] = 0.0 if config.migration == "async" else cols.get(
        "stall_des_s", cols["stall_bound_s"])
    return cols
