"""Wiring the layers together: the only place that uses traces, placement and simulator at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from placement import PlacementProblem, PlacementResult, SolverOptions, check_layout
from placement import default_slots, solve_placement
from simulator.analytic import AnalyticResult, count_traffic
from simulator.engine import SimConfig, SimResult, simulate
from simulator.paths import RouteTable
from traces import RoutingTrace
from traces.errors import InputError

Progress = Callable[[str], None]


def microbatches(trace: RoutingTrace) -> Iterator[RoutingTrace]:
    """The trace's recorded steps as micro-batches (one block per step), in step order."""
    if trace.step is None:
        yield trace
        return
    order = np.argsort(trace.step, kind="stable")
    steps = trace.step[order]
    bounds = np.flatnonzero(np.diff(steps)) + 1
    for part in np.split(order, bounds):
        yield trace.take(part)


def build_problem(
    routes: RouteTable,
    activation: np.ndarray,
    layer_indices: tuple[int, ...],
    origin_weight: np.ndarray | None = None,
    slots_per_gpu: int | None = None,
    max_per_gpu_per_layer: int | None = None,
) -> PlacementProblem:
    """A placement problem from the cluster's distances and measured activation."""
    L, E = activation.shape
    s_def, l_def = default_slots(L, E, routes.num_gpus)
    return PlacementProblem(
        distance=routes.distance,
        gpu_server=routes.cluster.gpu_server,
        activation=activation,
        slots_per_gpu=slots_per_gpu or s_def,
        max_per_gpu_per_layer=max_per_gpu_per_layer or l_def,
        origin_weight=origin_weight,
        layer_indices=layer_indices,
    )


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One placement replayed: placer result, simulation and the independent analytic count."""

    placement: PlacementResult
    sim: SimResult
    analytic: AnalyticResult
    sim_runtime_s: float


def place_and_replay(
    problem: PlacementProblem,
    strategy: str,
    replay: RoutingTrace,
    routes: RouteTable,
    sim_config: SimConfig,
    options: SolverOptions,
    progress: Progress = lambda _msg: None,
) -> Evaluation:
    """Place with ``strategy``, check the layout, replay it in the DES and count it analytically."""
    progress(f"placing experts with {strategy}")
    res = solve_placement(problem, strategy, options)
    if not res.is_ok or res.layout is None:
        raise InputError(f"placement {strategy} failed: {res.status.value}: {res.message}")
    problems = check_layout(problem, res.layout)
    if problems:
        raise RuntimeError(f"placement {strategy} produced an invalid layout: {problems}")
    progress(
        f"  {strategy}: {res.status.value} in {res.runtime_s:.2f} s,"
        f" expected hops/token {res.objective:.1f}"
    )
    progress(f"replaying {replay.num_tokens} tokens through the SimPy model ({strategy})")
    t0 = time.perf_counter()
    sim = simulate(microbatches(replay), routes, res.layout.expert_gpus, sim_config)
    elapsed = time.perf_counter() - t0
    analytic = count_traffic(
        microbatches(replay), routes, res.layout.expert_gpus, sim_config.traffic
    )
    if not np.array_equal(sim.links["bytes"].to_numpy(), analytic.link_bytes):
        raise RuntimeError("simulator and analytic counter disagree on per-link bytes")
    progress(
        f"  {strategy}: replay {elapsed:.1f} s, makespan {sim.summary['makespan_s'] * 1e3:.2f} ms,"
        " per-link bytes equal the analytic count"
    )
    return Evaluation(res, sim, analytic, elapsed)


def summary_row(ev: Evaluation) -> dict[str, object]:
    """The comparison numbers of one evaluated placement."""
    links = ev.sim.links
    by_tier = links.groupby("tier")["bytes"].sum()
    row: dict[str, object] = {
        "strategy": ev.placement.strategy,
        "status": ev.placement.status.value,
        "solve_time_s": ev.placement.runtime_s,
        "expected_hops_per_token": ev.placement.objective,
        "hops_per_token": ev.sim.summary["hops_per_token"],
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
        for col in ("hops_per_token", "network_link_bytes", "latency_p99_ms", "makespan_ms"):
            df[f"{col}_reduction_pct"] = 100.0 * (1.0 - df[col] / base[col])
    return df
