"""What a study's cells cost before they run, by the formulas of :mod:`traces.infra.limits`:
the order of their CPU time (replays, counted as ``simulate`` counts them, and every solve's
time limit in full) and the records they write (per-token and per-link rows)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from placement.strategies import TIME_LIMITED
from traces.infra.limits import CELL_FIXED_CPU_S, CellWork, replay_cpu_s

if TYPE_CHECKING:
    from simulator.cluster.paths import RouteTable
    from simulator.traffic_config import TrafficConfig
    from traces import RoutingTrace


def cell_work(config: dict[str, Any], facts: dict[str, Any]) -> CellWork:
    """The cost of one cell from its configuration and its validation's ``facts`` (model,
    cluster, sim): a fixed part (:data:`CELL_FIXED_CPU_S`) and its replays.  A replay cell
    replays ``trace.replay_tokens`` in ``sim.mode`` and counts them analytically; a
    rebalancing cell replays its whole trace in ``rebalance.mode`` (its re-placements' solves
    are not counted: their number follows from the trace's steps)."""
    from experiments.studies.sections import solver_options

    layers = facts["model"].num_moe_layers
    if "rebalance" in config:
        from experiments.studies.rebalance_cell import rebalance_config
        from traces.io import read_trace_meta

        tokens = read_trace_meta(Path(config["trace"]["source"]))[1]
        mode = rebalance_config(config).mode
        return CellWork(CELL_FIXED_CPU_S + replay_cpu_s(tokens, layers, mode), kind="rebalance",
                        des_token_layers=tokens * layers if mode == "des" else 0)
    strategy = config["strategy"]
    limit = (solver_options(strategy, config["seed"]).time_limit_s
             if strategy["name"] in TIME_LIMITED else 0.0)
    tokens = int(config["trace"]["replay_tokens"])
    replay = (CELL_FIXED_CPU_S + replay_cpu_s(tokens, layers, facts["sim"].mode)
              + replay_cpu_s(tokens, layers, "analytic"))
    des = tokens * layers if facts["sim"].mode == "des" else 0
    return CellWork(replay, limit, tokens, 2 * len(facts["cluster"].links), des_token_layers=des)


def failure_study_work(strategies: list[str], failures: int, des_worst: int, tokens: int,
                       moe_layers: int, time_limit_s: float,
                       des_hop_events: float | None = None) -> list[CellWork]:
    """The cost of each strategy of ``study failures`` on ``failures`` single failures: the
    analytic count of the healthy fabric and of every failure under each policy (keep,
    re-place; a robust strategy only keeps), the DES replays of the healthy fabric and of the
    ``des_worst`` worst failures per policy, and a solve per scenario it re-places on (layouts
    reused for an equal problem are not subtracted).  ``des_hop_events``, the hop events of one
    DES replay of the study's replay trace (:func:`des_replay_hop_events`), costs the DES
    replays by events instead of the per-token rate."""
    from experiments.studies.failures import POLICIES, ROBUST_SUFFIX

    out = []
    for strategy in strategies:
        robust = strategy.endswith(ROBUST_SUFFIX)
        policies = 1 if robust else len(POLICIES)
        counts = 1 + failures * policies
        des = 1 + min(des_worst, failures) * policies if des_worst else 0
        solves = 1 if robust else 1 + failures
        limited = strategy.removesuffix(ROBUST_SUFFIX) in TIME_LIMITED
        work = CellWork(replay_cpu_s(counts * tokens, moe_layers, "analytic")
                        + replay_cpu_s(des * tokens, moe_layers, "des"),
                        solves * time_limit_s if limited else 0.0,
                        des_token_layers=des * tokens * moe_layers)
        out.append(work if des_hop_events is None or not des else
                   work.counted(des * des_hop_events))
    return out


def des_replay_hop_events(trace: RoutingTrace, routes: RouteTable,
                          microbatch_tokens: int | None, traffic: TrafficConfig,
                          tokens: int | None = None) -> float:
    """Hop events of a DES replay of ``tokens`` tokens (default: the trace's) like ``trace`` on
    ``routes``, as ``simulate --mode des`` counts them: its first micro-batch's, placed
    round-robin as a stand-in for the layout (:func:`simulator.des_cost.stand_in_work`; the
    time line says so), scaled to the tokens."""
    from simulator.des_cost import stand_in_work
    from simulator.microbatches import microbatches

    first = next(microbatches([trace], microbatch_tokens), None)
    if first is None or first.num_tokens == 0:
        return 0.0
    work = stand_in_work(first, routes, traffic)
    return float(work.hop_events) * (tokens or trace.num_tokens) / first.num_tokens
