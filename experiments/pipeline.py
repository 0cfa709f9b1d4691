"""Wiring the layers together: the only place that uses traces, placement and simulator at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from placement import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    check_layout,
    default_slots,
    expected_cost,
    solve_placement,
)
from placement.token_sample import TokenSample, token_sample
from simulator.analytic import AnalyticResult, count_traffic
from simulator.cluster.arrays import placement_arrays
from simulator.cluster.paths import RouteTable
from simulator.config import SimConfig
from simulator.engine import SimResult
from simulator.microbatches import microbatches
from simulator.replay import replay
from simulator.traffic_config import TrafficConfig
from traces import RoutingTrace
from traces.infra.errors import InputError
from traces.io import iter_trace, read_trace_meta
from traces.model import ModelSpec
from traces.origins import OriginAssigner, resolve_origins, with_origins

Progress = Callable[[str], None]


def origin_activation(
    blocks: Iterable[RoutingTrace], num_gpus: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """p[l, i] and a[l, i, origin GPU] per token over a trace's blocks, and origins recorded?

    ``a`` sums to ``p`` over GPUs; origins follow the simulator's rule where not recorded.
    """
    counts: np.ndarray | None = None
    tokens = 0
    recorded = True
    shape: tuple[int, int] = (0, 0)
    for block in blocks:
        m = block.model
        L, E = m.num_moe_layers, m.num_routed_experts
        if counts is None:
            shape = (L, E)
            counts = np.zeros(L * E * num_gpus, dtype=np.int64)
        origins = resolve_origins(block, num_gpus)
        recorded &= block.origin_gpu is not None
        offs = (np.arange(L) * E)[None, :, None]
        flat = (block.experts.astype(np.int64) + offs) * num_gpus + origins[:, None, None]
        counts += np.bincount(flat.ravel(), minlength=counts.size)
        tokens += block.num_tokens
    if counts is None or tokens == 0:
        raise InputError("the trace has no tokens to measure activation from")
    a = counts.reshape(*shape, num_gpus) / tokens
    return a.sum(axis=2), a, recorded


def trace_activation(
    path: Path, assigner: OriginAssigner
) -> tuple[ModelSpec, np.ndarray, np.ndarray, bool]:
    """Model, p[l, i], a[l, i, origin GPU] and whether origins were recorded, from a trace file.

    Origins come from ``assigner`` (an origin model, or recorded where present, else ``dp``).
    """
    meta, tokens = read_trace_meta(path)
    if tokens == 0:  # any other problem of the file keeps its own message
        raise InputError(f"{path}: the trace has no tokens to measure activation from")
    recorded = [True]

    def blocks() -> Iterator[RoutingTrace]:
        for b in iter_trace(path):
            recorded[0] &= b.origin_gpu is not None
            yield b

    try:
        p, a, _ = origin_activation(with_origins(blocks(), assigner), assigner.num_gpus)
    except InputError as exc:
        if "no tokens" in str(exc):
            raise InputError(f"{path}: the trace has no tokens") from None
        raise InputError(f"{path}: {exc}") from None
    return meta.model, p, a, recorded[0]


def trace_sample(path: Path, assigner: OriginAssigner) -> TokenSample:
    """The trace file's tokens as the strategy's token sample (experts and origins).

    Origins come from ``assigner``, as in :func:`trace_activation`.
    """
    try:
        return token_sample(with_origins(iter_trace(path), assigner), assigner.num_gpus)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def build_problem(
    routes: RouteTable,
    model: ModelSpec,
    activation: np.ndarray,
    origin_activation: np.ndarray | None = None,
    num_redundant: int = 0,
    balance_eps: float | None = None,
    slots_per_gpu: int | None = None,
    per_layer_per_gpu: int | None = None,
    traffic: TrafficConfig | None = None,
    sample: TokenSample | None = None,
) -> PlacementProblem:
    """A placement problem with every input the strategies may use.

    With ``origin_activation`` the origin weights (the paper's c[s] comes from them) are the
    measured share of tokens per origin GPU, so ``ilp``/``ilp-load`` see the real origins.
    ``traffic``: the bytes a route moves, the same configuration the replay uses (default
    ``TrafficConfig()``), so ``ilp-bytes`` and ``ilp-bottleneck`` optimise what is replayed.
    """
    L, E = activation.shape
    G = routes.num_gpus
    s_def, l_def = default_slots(L, E + num_redundant, G)
    traffic = traffic or TrafficConfig()
    # the bytes per token a placement optimises and reports (place's "network" line)
    traffic.check_byte_counts(model, 1, routes, "placement's bytes per token")
    dispatch_bytes, combine_bytes = traffic.route_bytes(model)
    return PlacementProblem(
        activation=activation,
        slots_per_gpu=s_def if slots_per_gpu is None else slots_per_gpu,  # 0 is rejected
        max_per_gpu_per_layer=l_def if per_layer_per_gpu is None else per_layer_per_gpu,
        layer_indices=model.moe_layer_indices,
        origin_activation=origin_activation,
        origin_weight=None if origin_activation is None else origin_activation.sum(axis=(0, 1)),
        dispatch_bytes=float(dispatch_bytes),
        combine_bytes=float(combine_bytes),
        num_redundant=num_redundant,
        balance_eps=balance_eps,
        expert_groups=model.num_expert_groups,
        token_sample=sample,
        **placement_arrays(routes),
    )


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One placement replayed: strategy result, simulation and the independent analytic count."""

    placement: PlacementResult
    layout: ExpertLayout  # the placement's layout (a failed placement never gets this far)
    sim: SimResult
    analytic: AnalyticResult
    sim_runtime_s: float
    expected_hops_per_token: float  # the paper's metric of the layout on the fitted activation


def place_and_replay(
    problem: PlacementProblem,
    strategy: str,
    replay_trace: RoutingTrace,
    routes: RouteTable,
    sim_config: SimConfig,
    options: SolverOptions,
    progress: Progress = lambda _msg: None,
) -> Evaluation:
    """Place with ``strategy``, check the layout, replay it (``sim_config.mode``: the DES or
    flow mode) and count it analytically."""
    sim_config.traffic.check_byte_counts(replay_trace.model, replay_trace.num_tokens, routes,
                                         f"the replay of {strategy}")
    progress(f"placing experts with {strategy}")
    res = solve_placement(problem, strategy, options)
    if not res.is_ok or res.layout is None:
        raise InputError(f"placement {strategy} failed: {res.status.value}: {res.message}")
    problems = check_layout(problem, res.layout)
    if problems:
        raise RuntimeError(f"placement {strategy} produced an invalid layout: {problems}")
    hops = expected_cost(problem, res.layout)
    progress(
        f"  {strategy}: {res.status.value} in {res.runtime_s:.2f} s,"
        f" expected hops/token {hops:.1f}"
    )
    progress(f"replaying {replay_trace.num_tokens} tokens in mode {sim_config.mode} ({strategy})")
    t0 = time.perf_counter()
    # Micro-batches by the one rule (simulator.microbatches): recorded steps or N tokens.
    cut = list(microbatches([replay_trace], sim_config.microbatch_tokens))
    sim = replay(cut, routes, res.layout.expert_gpus, sim_config)
    elapsed = time.perf_counter() - t0
    analytic = count_traffic(
        cut, routes, res.layout.expert_gpus, sim_config.traffic
    )
    # exact for single-path routing; split modes carry fractional shares rounded to bytes
    if np.abs(sim.links["bytes"].to_numpy() - analytic.link_bytes).max(initial=0) > 1:
        raise RuntimeError("simulator and analytic counter disagree on per-link bytes")
    progress(
        f"  {strategy}: replay {elapsed:.1f} s, makespan {sim.summary['makespan_s'] * 1e3:.2f} ms,"
        " per-link bytes equal the analytic count"
    )
    return Evaluation(res, res.layout, sim, analytic, elapsed, hops)


def summary_row(ev: Evaluation) -> dict[str, object]:
    """The comparison numbers of one evaluated placement."""
    links = ev.sim.links
    by_tier = links.groupby("tier")["bytes"].sum()
    row: dict[str, object] = {
        "strategy": ev.placement.strategy,
        "status": ev.placement.status.value,
        # The solver's own objective units (hops, wire or busiest-link seconds); nan: no solver.
        "dual_bound": ev.placement.dual_bound,
        "gap": ev.placement.gap,
        "solve_time_s": ev.placement.runtime_s,
        "objective": ev.placement.objective,
        "lower_bound": ev.placement.info.get("lower_bound", float("nan")),
        "expected_hops_per_token": ev.expected_hops_per_token,
        "hops_per_token": ev.sim.summary["hops_per_token"],
        "dispatch": ev.sim.summary["dispatch"],
        "multipath": ev.sim.summary["multipath"],
        "remote_copies_per_token_layer": ev.sim.summary["remote_copies_per_token_layer"],
        "remote_routes_per_token_layer": ev.sim.summary["remote_routes_per_token_layer"],
        "network_bytes_dedup": ev.sim.summary["network_bytes_dedup"],
        "network_bytes_no_dedup": ev.sim.summary["network_bytes_no_dedup"],
        "network_bytes": ev.analytic.network_bytes,
        "network_link_bytes": ev.sim.summary["network_link_bytes"],
        "max_link_utilisation": ev.sim.summary["max_link_utilisation"],
        "latency_p50_ms": ev.sim.summary["latency_p50_s"] * 1e3,
        "latency_p99_ms": ev.sim.summary["latency_p99_s"] * 1e3,
        "makespan_ms": ev.sim.summary["makespan_s"] * 1e3,
        "sim_runtime_s": ev.sim_runtime_s,
    }
    for tier, b in by_tier.items():
        row[f"bytes_{tier}"] = int(b)
    return row


def compare(evals: list[Evaluation], baseline: str = "round-robin") -> pd.DataFrame:
    """Summary table with the reduction of each metric against the baseline (percent)."""
    df = pd.DataFrame([summary_row(e) for e in evals])
    if baseline in set(df["strategy"]):
        base = df.loc[df["strategy"] == baseline].iloc[0]
        for col in ("hops_per_token", "remote_copies_per_token_layer", "network_link_bytes",
                    "latency_p99_ms", "makespan_ms"):
            df[f"{col}_reduction_pct"] = 100.0 * (1.0 - df[col] / base[col])
    return df
