"""Placement over time: a policy re-places experts while a trace is replayed window by window.

Time is the trace's ``step`` column.  The first ``window_steps`` steps fit the first layout;
from then on the trace is cut into windows of ``interval_steps`` steps, and at the start of
each window the policy decides:

- ``static``: keep the first layout;
- ``periodic``: re-fit on the last ``window_steps`` steps (any strategy);
- ``threshold``: re-fit, but switch only when the layout in force costs more than the fresh one
  by ``threshold`` (a fraction) on the last window, in expected network copies (de-duplicated)
  or GPU imbalance (max/mean load), whichever is worse (SGLang's skip-if-balanced, generalised).

A switch is migration-aware with ``move_weight`` (a price on weight bytes moved, exact for the
assignment strategies) or ``move_budget_bytes`` (at most that many bytes per rebalance); see
:mod:`placement.migration`.  Every moved copy sends its weights from its nearest old copy over
the cluster's routes: the per-link bytes are counted exactly, and with ``migration="stall"``
serving stops for the time the busiest link needs to carry them (a lower bound: links carry
the weights back to back, store-and-forward delay aside).

Each window is replayed with the layout in force (the analytic counter, or the DES for
latency) and reported as one timeline row.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.pipeline import build_problem
from experiments.rebalance_config import RebalanceConfig
from placement import ExpertLayout, SolverOptions, expected_cost, solve_placement
from placement.migration import (
    ASSIGNMENT_STRATEGIES,
    expert_weight_bytes,
    plan_migration,
    relabel_for_fewest_moves,
    replace_with_move_cost,
)
from simulator.analytic import pair_route_counts
from simulator.cluster.paths import RouteTable
from simulator.modes import REPLAY_MODES
from simulator.traffic import (
    PairList,
    TrafficConfig,
    remote_copies,
    resolve_hosts_layer,
    resolve_origins,
)
from traces.infra.errors import InputError
from traces.io import iter_trace, read_trace_meta
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class RebalanceResult:
    timeline: pd.DataFrame  # one row per window
    layouts: dict[int, ExpertLayout]  # step at which each layout came into force
    migration_links: pd.DataFrame  # per rebalance and link direction: weight bytes


def step_range(trace: Path) -> tuple[int, int]:
    """(first, last + 1) step of a trace whose steps are recorded and in order."""
    lo, hi, last = None, None, None
    for b in iter_trace(trace):
        if b.step is None or (b.step < 0).any():
            raise InputError(
                f"{trace}: the trace records no steps; a rebalancing policy needs them"
                " (trace synth --step-tokens, or an engine dump with passes)"
            )
        if (np.diff(b.step) < 0).any() or (last is not None and b.step[0] < last):
            raise InputError(f"{trace}: steps are not in order; rebalancing replays them in time")
        last = int(b.step[-1])
        lo = int(b.step.min()) if lo is None else lo
        hi = last + 1
    if lo is None or hi is None:
        raise InputError(f"{trace}: the trace has no tokens")
    return lo, hi


def _steps(trace: Path, start: int) -> Iterator[tuple[int, RoutingTrace]]:
    """(step, its tokens) in step order from ``start`` on, streamed block by block."""
    for b in iter_trace(trace):
        assert b.step is not None
        cuts = np.flatnonzero(np.diff(b.step)) + 1
        for part in np.split(np.arange(b.num_tokens), cuts):
            step = int(b.step[part[0]])
            if step >= start:
                yield step, b.take(part)


class _Window:
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

    def latency(self, server_dedup: bool, mode: str) -> dict[str, float]:
        """The window replayed (``mode``: des or flow), one micro-batch per step: MoE latency
        percentiles."""
        from simulator.config import SimConfig
        from simulator.replay import replay

        assert self.blocks is not None
        res = replay(self.blocks, self.routes, self.eg,
                     SimConfig(traffic=TrafficConfig(
                         dispatch="deepep-normal" if server_dedup else "all-to-all"), mode=mode))
        return {k: float(res.summary[k]) for k in ("latency_p50_s", "latency_p99_s")}

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


def run_rebalance(
    trace: Path,
    routes: RouteTable,
    config: RebalanceConfig,
    options: SolverOptions | None = None,
    progress=None,  # noqa: ANN001 - Callable[[str], None]
) -> RebalanceResult:
    """Replay ``trace`` under the policy in one pass over the file; see the module docstring.

    Activation is kept per chunk of gcd(interval, window) steps, so a re-fit on the last
    ``window_steps`` steps sums whole chunks; tokens are counted as they stream by.
    """
    options = options or SolverOptions()
    model = read_trace_meta(trace)[0].model
    weight = expert_weight_bytes(model, config.weight_bytes_per_param)
    lo, hi = step_range(trace)
    W, N = config.window_steps, config.interval_steps
    if hi - lo <= W:
        raise InputError(
            f"--window {W}: the trace spans {hi - lo} steps ({lo}..{hi - 1}); the fitting"
            " window must leave steps to replay"
        )
    chunk = math.gcd(W, N)
    first = lo + W
    history: deque[tuple[np.ndarray, int]] = deque(maxlen=W // chunk)  # (counts, tokens)
    pending = np.zeros(0)
    pending_tokens, pending_chunk = 0, None
    layout: ExpertLayout | None = None
    window: _Window | None = None
    layouts: dict[int, ExpertLayout] = {}
    rows: list[dict[str, object]] = []
    links: list[pd.DataFrame] = []
    current = None  # (index, start, decision, moved, stall)

    def close_chunk() -> None:
        nonlocal pending, pending_tokens
        if pending_tokens:
            history.append((pending, pending_tokens))
        pending, pending_tokens = np.zeros(0), 0

    def fit(start: int) -> ExpertLayout:
        counts, tokens = _total(history)
        if not tokens:
            raise InputError(f"{trace}: steps {start - W}..{start - 1} hold no tokens to fit on")
        a = counts / tokens
        return _fit(routes, model, a.sum(axis=2), a, config, options, layout, tokens / W)

    def finish_window() -> None:
        if current is not None and window is not None and window.tokens:
            i, start, decision, moved, stall = current
            row: dict[str, object] = {"window": i, "step_start": start,
                                      "step_stop": min(start + N, hi), "decision": decision,
                                      "bytes_migrated": moved, "stall_s": stall}
            row.update(window.row(config.server_dedup))
            if config.mode in REPLAY_MODES:
                row.update(window.latency(config.server_dedup, config.mode))
            rows.append(row)

    for step, block in _steps(trace, lo):
        c = (step - lo) // chunk
        if c != pending_chunk:
            close_chunk()
            for _ in range(c - (pending_chunk if pending_chunk is not None else -1) - 1):
                history.append((np.zeros(0), 0))  # steps without tokens still age the window
            pending_chunk = c
        if step >= first and (current is None or current[0] != (step - first) // N):
            finish_window()
            i = (step - first) // N
            wstart = first + i * N  # the window's start (its first steps may hold no tokens)
            decision, moved, stall = "keep", 0.0, 0.0
            if layout is None:
                layout, decision = fit(wstart), "first"
                layouts[wstart] = layout
            elif config.policy != "static":
                fresh = fit(wstart)
                if config.policy == "periodic" or _worse(routes, model, history, W, layout,
                                                         fresh, config.threshold):
                    plan = plan_migration(layout, fresh, routes.distance)
                    g = routes.num_gpus
                    keys, moves = np.unique(plan.src_gpu * g + plan.dst_gpu, return_counts=True)
                    per_link = pair_route_counts(routes, PairList(keys // g, keys % g, moves))
                    per_link = per_link * weight
                    bw = np.repeat([lk.bandwidth_bytes_per_s for lk in routes.cluster.links], 2)
                    moved = plan.num_moves * weight
                    stall = float((per_link / bw).max()) if plan.num_moves else 0.0
                    links.append(pd.DataFrame({"step": wstart,
                                               "link_dir": np.arange(per_link.size),
                                               "weight_bytes": per_link}))
                    layout, decision = fresh, "rebalance"
                    layouts[wstart] = layout
            current = (i, wstart, decision, moved, stall)
            window = _Window(routes, layout, keep_blocks=config.mode in REPLAY_MODES)
            if progress is not None:
                progress(f"step {wstart}: {decision}")
        if window is not None and step >= first:
            window.add(block)
        counts = _activation_counts(block, routes.num_gpus)
        pending = counts if pending.size == 0 else pending + counts
        pending_tokens += block.num_tokens
    finish_window()
    migration = (pd.concat(links, ignore_index=True) if links
                 else pd.DataFrame({"step": [], "link_dir": [], "weight_bytes": []}))
    return RebalanceResult(timeline=pd.DataFrame(rows), layouts=layouts,
                           migration_links=migration)


def _total(history: deque[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Summed counts and tokens of the chunks in the look-back window."""
    full = [(c, t) for c, t in history if t]
    if not full:
        return np.zeros(0), 0
    total = full[0][0].copy()
    for c, _ in full[1:]:
        total += c
    return total, sum(t for _, t in full)


def _activation_counts(block: RoutingTrace, num_gpus: int) -> np.ndarray:
    """Routed tokens per (layer, expert, origin GPU) of a block, [L, E, G]."""
    m = block.model
    L, E = m.num_moe_layers, m.num_routed_experts
    origins = resolve_origins(block, num_gpus)
    offs = (np.arange(L) * E)[None, :, None]
    flat = (block.experts.astype(np.int64) + offs) * num_gpus + origins[:, None, None]
    return np.bincount(flat.ravel(), minlength=L * E * num_gpus).reshape(L, E, num_gpus)


def _fit(routes, model, p, a, config, options, current, tokens_per_step):  # noqa: ANN001, ANN202
    """The strategy's layout for activation ``p``/``a``, migration-aware when asked."""
    problem = build_problem(routes, model, p, a)
    aware = current is not None and (
        config.move_weight is not None or config.move_budget_bytes is not None
    )
    strategy = config.strategy
    if aware and strategy in ASSIGNMENT_STRATEGIES:
        res = replace_with_move_cost(
            problem, options, strategy, current, tokens_per_step * config.interval_steps,
            expert_weight_bytes(model, config.weight_bytes_per_param),
            move_weight=config.move_weight or 0.0, budget_bytes=config.move_budget_bytes,
        )
    else:
        res = solve_placement(problem, strategy, options)
    if not res.is_ok or res.layout is None:
        raise InputError(f"strategy {strategy}: no layout ({res.status.value}: {res.message})")
    if current is not None and not aware:
        # Same cost for every objective, fewest copies moved: interchangeable GPUs relabelled.
        return relabel_for_fewest_moves(problem, current, res.layout, options)
    return res.layout


def _worse(routes, model, history, W, current, fresh, threshold) -> bool:  # noqa: ANN001
    """The layout in force costs more than the fresh one by ``threshold`` on the last window:
    expected hops (the strategies' cost model) or GPU imbalance (max/mean routed load)."""
    counts, tokens = _total(history)
    a = counts / max(tokens, 1)
    problem = build_problem(routes, model, a.sum(axis=2), a)
    cost = [expected_cost(problem, lay) for lay in (current, fresh)]
    imbalance = [_imbalance(problem, lay) for lay in (current, fresh)]
    over = 1 + threshold
    return bool(cost[0] > cost[1] * over or imbalance[0] > imbalance[1] * over)


def _imbalance(problem, layout: ExpertLayout) -> float:  # noqa: ANN001
    from placement.assignment import gpu_loads

    load = gpu_loads(problem, layout)
    return float(load.max() / load.mean()) if load.mean() else 1.0
