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
the cluster's routes: the per-link bytes are counted exactly (the busiest link's time for
them is ``stall_bound_s``, a lower bound on any stall).  With ``migration="stall"`` serving
stops while the weights move: in DES mode the stall is measured in the simulator
(``stall_des_s``: every move one message, all at once on the idle network), in analytic mode
it is the bound.  With ``migration="async"`` (a replay mode: des or flow) the moves run
beside the window's serving on the same links as low-priority flows (:mod:`simulator.migration`;
in flow mode strict low-priority fluid flows, a lower bound on the DES's interference): serving
keeps the old layout until they have arrived, the latency they cost is measured against the
same window without them, and ``migration_s`` is how long they took.

Each window is replayed with the layout in force (the analytic counter, or the DES for
latency) and reported as one timeline row.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.pipeline import build_problem
from experiments.rebalance_config import RebalanceConfig
from experiments.rebalance_sample import WindowSample
from experiments.rebalance_window import (
    Migration,
    WindowMetrics,
    moves_columns,
    no_moves,
    sim_config,
)
from placement import SAMPLE_STRATEGIES, ExpertLayout, SolverOptions, expected_cost, solve_placement
from placement.migration import (
    ASSIGNMENT_STRATEGIES,
    expert_weight_bytes,
    plan_migration,
    relabel_for_fewest_moves,
    replace_with_move_cost,
)
from placement.migration_dedup import METRICS as DEDUP_METRICS
from placement.migration_dedup import replace_dedup_with_moves
from placement.migration_eplb import replace_eplb_with_moves
from placement.token_sample import TokenSample
from simulator.cluster.paths import RouteTable
from simulator.migration import migration_link_bytes
from simulator.modes import REPLAY_MODES
from traces.infra.errors import InputError
from traces.io import iter_trace, read_trace_meta
from traces.model import ModelSpec
from traces.origin_models import resolve_model
from traces.origins import OriginAssigner, resolve_origins, with_origins
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class RebalanceResult:
    timeline: pd.DataFrame  # one row per window
    layouts: dict[int, ExpertLayout]  # step at which each layout came into force
    migration_links: pd.DataFrame  # per rebalance and link direction: weight bytes
    origins_warning: str | None = None  # origins cover under half the GPUs


def check_strategy(strategy: str, where: str) -> None:
    """A strategy the policies can re-fit (every known one: a window keeps the activation
    counts of its steps and, for the strategies fitted on tokens, a token sample)."""
    from placement import STRATEGIES

    if strategy not in STRATEGIES:
        raise InputError(f"{where} {strategy!r}: known: {', '.join(sorted(STRATEGIES))}")


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


def _steps(trace: Path, start: int, assigner: OriginAssigner
           ) -> Iterator[tuple[int, RoutingTrace]]:
    """(step, its tokens, origins set) in step order from ``start`` on, block by block."""
    for b in with_origins(iter_trace(trace), assigner):
        assert b.step is not None
        cuts = np.flatnonzero(np.diff(b.step)) + 1
        for part in np.split(np.arange(b.num_tokens), cuts):
            step = int(b.step[part[0]])
            if step >= start:
                yield step, b.take(part)


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
    replay = _Replay(trace, routes, config, options or SolverOptions(), progress)
    for step, block in _steps(trace, replay.lo, replay.assigner):
        replay.add(step, block)
    return replay.result()


class _Replay:
    """The state of one pass of :func:`run_rebalance`: the fitting history (whole chunks of
    activation counts and, for the sample strategies, tokens), the layout in force and the
    window being measured."""

    def __init__(self, trace: Path, routes: RouteTable, config: RebalanceConfig,
                 options: SolverOptions, progress) -> None:  # noqa: ANN001
        self.trace, self.routes, self.config, self.options = trace, routes, config, options
        self.progress = progress
        meta, tokens = read_trace_meta(trace)
        self.model = meta.model
        self.weight = _checked_weight_bytes(self.model, tokens, routes, config)
        self.lo, self.hi = step_range(trace)
        W, N = config.window_steps, config.interval_steps
        if self.hi - self.lo <= W:
            raise InputError(
                f"--window {W}: the trace spans {self.hi - self.lo} steps ({self.lo}.."
                f"{self.hi - 1}); the fitting window must leave steps to replay"
            )
        self.chunk = math.gcd(W, N)
        self.assigner = OriginAssigner(resolve_model(config.origins), routes.cluster.gpu_server)
        self.first = self.lo + W
        self.history: deque[tuple[np.ndarray, int]] = deque(maxlen=W // self.chunk)
        self.sample = (WindowSample(config.sample_tokens, W // self.chunk, routes.num_gpus,
                                    options.seed)
                       if config.strategy in SAMPLE_STRATEGIES else None)
        self.pending = np.zeros(0)  # counts of the chunk being filled, and its tokens
        self.pending_tokens = 0
        self.pending_chunk: int | None = None
        self.layout: ExpertLayout | None = None
        self.window: WindowMetrics | None = None
        self.layouts: dict[int, ExpertLayout] = {}
        self.rows: list[dict[str, object]] = []
        self.links: list[pd.DataFrame] = []
        self.current: tuple[int, int, str, dict[str, float], Migration | None] | None = None

    def add(self, step: int, block: RoutingTrace) -> None:
        """One step's tokens: age the history, open a window where one starts, count."""
        self._age_to((step - self.lo) // self.chunk)
        if step >= self.first:
            i = (step - self.first) // self.config.interval_steps
            if self.current is None or self.current[0] != i:
                self._start_window(i)
            assert self.window is not None
            self.window.add(block)
        counts = _activation_counts(block, self.routes.num_gpus)
        self.pending = counts if self.pending.size == 0 else self.pending + counts
        self.pending_tokens += block.num_tokens
        if self.sample is not None:
            self.sample.add(block)

    def result(self) -> RebalanceResult:
        self._finish_window()
        migration = (pd.concat(self.links, ignore_index=True) if self.links
                     else pd.DataFrame({"step": [], "link_dir": [], "weight_bytes": []}))
        return RebalanceResult(timeline=pd.DataFrame(self.rows), layouts=self.layouts,
                               migration_links=migration,
                               origins_warning=self.assigner.warning())

    def _age_to(self, c: int) -> None:
        """Close the chunk being filled when step's chunk ``c`` is a new one; chunks without
        tokens in between still age the window."""
        if c == self.pending_chunk:
            return
        self._close_chunk()
        skipped = c - (self.pending_chunk if self.pending_chunk is not None else -1) - 1
        for _ in range(skipped):
            self.history.append((np.zeros(0), 0))
            if self.sample is not None:
                self.sample.close_chunk()
        self.pending_chunk = c

    def _close_chunk(self) -> None:
        if self.pending_tokens:
            self.history.append((self.pending, self.pending_tokens))
            if self.sample is not None:
                self.sample.close_chunk()
        self.pending, self.pending_tokens = np.zeros(0), 0

    def _fit(self, start: int) -> ExpertLayout:
        counts, tokens = _total(self.history)
        W = self.config.window_steps
        if not tokens:
            raise InputError(f"{self.trace}: steps {start - W}..{start - 1} hold no tokens to"
                             " fit on")
        a = counts / tokens
        problem = build_problem(self.routes, self.model, a.sum(axis=2), a,
                                sample=_window_sample(self.sample))
        return _fit(problem, self.model, self.config, self.options, self.layout, tokens / W)

    def _start_window(self, i: int) -> None:
        """Window ``i``: keep the layout, or re-fit it and move the weights (the policy)."""
        self._finish_window()
        config = self.config
        wstart = self.first + i * config.interval_steps  # its first steps may hold no tokens
        decision, moved, migration = "keep", no_moves(config), None
        if self.layout is None:
            self.layout, decision = self._fit(wstart), "first"
            self.layouts[wstart] = self.layout
        elif config.policy != "static":
            fresh = self._fit(wstart)
            if config.policy == "periodic" or _worse(
                    self.routes, self.model, self.history, _window_sample(self.sample),
                    self.layout, fresh, config):
                moved, migration = self._migrate(wstart, fresh)
                self.layout, decision = fresh, "rebalance"
                self.layouts[wstart] = self.layout
        self.current = (i, wstart, decision, moved, migration)
        self.window = WindowMetrics(self.routes, self.layout,
                                    keep_blocks=config.mode in REPLAY_MODES)
        if self.progress is not None:
            self.progress(f"step {wstart}: {decision}")

    def _migrate(self, wstart: int, fresh: ExpertLayout) -> tuple[dict[str, float], Migration]:
        """The moves from the layout in force to ``fresh``, their bytes per link."""
        assert self.layout is not None
        plan = plan_migration(self.layout, fresh, self.routes.distance)
        migration = Migration((plan.src_gpu, plan.dst_gpu), self.weight,
                              self.config.migration, self.layout)
        per_link = migration_link_bytes(self.routes, migration.moves, self.weight)
        self.links.append(pd.DataFrame({"step": wstart, "link_dir": np.arange(per_link.size),
                                        "weight_bytes": per_link}))
        return moves_columns(self.routes, self.config, migration, per_link), migration

    def _finish_window(self) -> None:
        if self.current is None or self.window is None or not self.window.tokens:
            return
        i, start, decision, moved, migration = self.current
        config = self.config
        row: dict[str, object] = {
            "window": i, "step_start": start,
            "step_stop": min(start + config.interval_steps, self.hi), "decision": decision,
            **moved,
        }
        row.update(self.window.row(config.server_dedup))
        if config.mode in REPLAY_MODES:
            row.update(self.window.latency(config.server_dedup, config.mode, migration))
        self.rows.append(row)


def _checked_weight_bytes(model: ModelSpec, tokens: int, routes: RouteTable,
                          config: RebalanceConfig) -> float:
    """An expert's weight bytes, after refusing totals an int64 cannot hold: the replayed
    routes' bytes (the one bound of ``TrafficConfig.check_byte_counts``) and a full re-layout's
    weights."""
    from traces.infra.limits import exact_int64

    sim_config(config.server_dedup).traffic.check_byte_counts(
        model, tokens, routes, "rebalance", "rebalance a shorter trace or a model with a"
        " smaller hidden size")
    weight = expert_weight_bytes(model, config.weight_bytes_per_param)
    copies = model.num_moe_layers * model.num_routed_experts
    exact_int64(copies * math.ceil(weight),
                f"rebalance: moving all {copies:,} expert copies of {math.ceil(weight):,} weight"
                " bytes", "lower --weight-bytes-per-param or use a model with smaller experts")
    return weight


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


def _window_sample(sample: WindowSample | None) -> TokenSample | None:
    return None if sample is None else sample.sample()


def _fit(problem, model, config, options, current, tokens_per_step):  # noqa: ANN001, ANN202
    """The strategy's layout for the window's ``problem``, migration-aware when asked."""
    aware = current is not None and (
        config.move_weight is not None or config.move_budget_bytes is not None
    )
    strategy = config.strategy
    horizon = tokens_per_step * config.interval_steps
    weight = expert_weight_bytes(model, config.weight_bytes_per_param)
    if aware and strategy in ASSIGNMENT_STRATEGIES:
        res = replace_with_move_cost(
            problem, options, strategy, current, horizon, weight,
            move_weight=config.move_weight or 0.0, budget_bytes=config.move_budget_bytes,
        )
    else:
        res = solve_placement(problem, strategy, options)
    if not res.is_ok or res.layout is None:
        raise InputError(f"strategy {strategy}: no layout ({res.status.value}: {res.message})")
    if current is None:
        return res.layout
    # Same cost for every objective, fewest copies moved: interchangeable GPUs relabelled.
    fresh = relabel_for_fewest_moves(problem, current, res.layout, options)
    if aware and strategy in DEDUP_METRICS:
        res = replace_dedup_with_moves(
            problem, options, strategy, current, fresh, horizon, weight,
            move_weight=config.move_weight or 0.0, budget_bytes=config.move_budget_bytes)
        assert res.layout is not None
        return res.layout
    if aware and strategy == "eplb":
        res = replace_eplb_with_moves(
            problem, options, current, fresh, weight, move_weight=config.move_weight or 0.0,
            budget_bytes=config.move_budget_bytes, horizon_tokens=horizon)
        assert res.layout is not None
        return res.layout
    return res.layout if aware else fresh


def _worse(routes, model, history, sample, current, fresh, config) -> bool:  # noqa: ANN001
    """The layout in force costs more than the fresh one by ``threshold`` on the last window:
    expected hops (the strategies' cost model; for dedup and dedup-bytes their own cost, the
    de-duplicated copies on the window's token sample) or GPU imbalance (max/mean load)."""
    counts, tokens = _total(history)
    a = counts / max(tokens, 1)
    problem = build_problem(routes, model, a.sum(axis=2), a, sample=sample)
    if config.strategy in DEDUP_METRICS:
        from placement.dedup.evaluate import dedup_cost

        metric = DEDUP_METRICS[config.strategy]
        cost = [dedup_cost(problem, lay, metric).cost_per_token for lay in (current, fresh)]
    else:
        cost = [expected_cost(problem, lay) for lay in (current, fresh)]
    imbalance = [_imbalance(problem, lay) for lay in (current, fresh)]
    over = 1 + config.threshold
    return bool(cost[0] > cost[1] * over or imbalance[0] > imbalance[1] * over)


def _imbalance(problem, layout: ExpertLayout) -> float:  # noqa: ANN001
    from placement.assignment import gpu_loads

    load = gpu_loads(problem, layout)
    return float(load.max() / load.mean()) if load.mean() else 1.0


def rebalance_with_counterfactual(
    trace: Path, routes: RouteTable, config: RebalanceConfig,
    options: SolverOptions | None = None,
    progress=None,  # noqa: ANN001 - Callable[[str], None], told once per window
) -> RebalanceResult:
    """:func:`run_rebalance`, and for periodic and threshold the network bytes of keeping the
    first layout throughout (``network_bytes_static``, the counterfactual of the savings)."""
    res = run_rebalance(trace, routes, config, options, progress)
    if config.policy != "static":
        static = run_rebalance(trace, routes, replace(
            config, policy="static", move_weight=None, move_budget_bytes=None,
            mode="analytic", migration="stall"), options)
        res.timeline["network_bytes_static"] = static.timeline["network_bytes"].to_numpy()
    return res


def summarize(t: pd.DataFrame) -> dict[str, Any]:
    """Totals over the replayed windows (token-weighted means for per-token metrics)."""
    w = t["tokens"] / t["tokens"].sum()
    out: dict[str, Any] = {
        "tokens": float(t["tokens"].sum()),
        "rebalances": int((t["decision"] == "rebalance").sum()),
        "network_bytes": float(t["network_bytes"].sum()),
        "network_bytes_dedup": float(t["network_bytes_dedup"].sum()),
        "network_bytes_no_dedup": float(t["network_bytes_no_dedup"].sum()),
        "remote_copies_per_token_layer": float((w * t["remote_copies_per_token_layer"]).sum()),
        "hops_per_token": float((w * t["hops_per_token"]).sum()),
        "gpu_load_max_over_mean": float(t["gpu_load_max_over_mean"].max()),
        "bytes_migrated": float(t["bytes_migrated"].sum()),
        "stall_s": float(t["stall_s"].sum()),
    }
    for col in ("stall_bound_s", "stall_des_s", "migration_s"):  # totals over the rebalances
        if col in t:
            out[col] = float(t[col].sum())  # NaN (no migration in the window) counts 0
    for col in ("latency_p99_s", "latency_p99_s_without_migration"):
        if col in t:
            out[f"{col}_max"] = float(t[col].max())
    if "network_bytes_static" in t:
        saved = (t["network_bytes_static"] - t["network_bytes"]).cumsum()
        moved = t["bytes_migrated"].cumsum()
        even = t["step_stop"][(saved >= moved) & (moved > 0)]
        out["network_bytes_saved_vs_static"] = float(saved.iloc[-1])
        out["break_even_step"] = int(even.iloc[0]) if len(even) else None
    return out
