"""Study cells that rebalance over time: policies and their knobs as sweep axes.

A study file with a ``[rebalance]`` table makes every cell a ``moe-netsim rebalance`` run: the
keys are the fields of :class:`experiments.rebalance_config.RebalanceConfig` (the one
definition of their defaults and ranges; ``policy``, ``interval_steps``, ``window_steps``,
``threshold``, ``move_weight``, ``move_budget_bytes``, ``sample_tokens``,
``weight_bytes_per_param``, ``migration``, ``mode``, ``server_dedup``, ``origins``), the
strategy is ``strategy.name`` and its ``strategy.options`` the solver's, the cluster is
``[topology]``, and ``trace.source`` is a trace file with steps, replayed whole
(``trace.fit_tokens`` and ``replay_tokens`` do not apply).
Axes vary any of them (``"rebalance.policy" = ["static", "periodic", "threshold"]``).  A cell's
row is the run's ``summary.json`` totals; its ``timeline`` frame is the run's timeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.rebalance_config import RebalanceConfig
from traces.infra.errors import InputError

KEYS = tuple(f.name for f in dataclasses.fields(RebalanceConfig) if f.name != "strategy")


def rebalance_config(config: dict[str, Any], where: str = "study") -> RebalanceConfig:
    """The cell's :class:`RebalanceConfig` (checked: keys, ranges, choices)."""
    table = config["rebalance"]
    if not isinstance(table, dict):
        raise InputError(f"{where}: rebalance: expected a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise InputError(f"{where}: rebalance.{unknown[0]}: unknown key; known: {', '.join(KEYS)}"
                         " (the strategy is strategy.name)")
    try:
        return RebalanceConfig(strategy=config["strategy"]["name"], **table)
    except TypeError as exc:  # a value of the wrong kind the dataclass cannot compare
        raise InputError(f"{where}: rebalance: {exc}") from None
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def validate_rebalance_cell(config: dict[str, Any], cluster: Any, where: str) -> Any:
    """Check a rebalancing cell completely (its trace is read once for its steps)."""
    from experiments.rebalance import check_strategy, step_range
    from traces.origin_models import resolve_model
    from traces.origins import OriginAssigner

    cfg = rebalance_config(config, where)
    check_strategy(cfg.strategy, f"{where}: strategy.name")
    source = config["trace"]["source"]
    if source == "synthetic" or not Path(source).is_file():
        raise InputError(f"{where}: trace.source: a rebalancing cell replays a trace file with"
                         f" steps, got {source!r}")
    OriginAssigner(resolve_model(cfg.origins, f"{where}: rebalance.origins"),
                   cluster.gpu_server, f"{where}: rebalance.origins")
    lo, hi = step_range(Path(source))
    if hi - lo <= cfg.window_steps:
        raise InputError(f"{where}: rebalance.window_steps {cfg.window_steps}: the trace spans"
                         f" {hi - lo} steps; the fitting window must leave steps to replay")
    from simulator.traffic_config import TrafficConfig
    from traces.io import read_trace_meta

    meta, tokens = read_trace_meta(Path(source))
    TrafficConfig().check_cluster_byte_counts(meta.model, tokens, cluster,
                                              f"{where}: trace.source")
    return meta.model


def evaluate_rebalance_cell(config: dict[str, Any]
                            ) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, str, Any]:
    """Run the cell's rebalancing: its totals, its knobs (columns that override the setup's),
    its timeline, the model's name and the cluster."""
    from experiments.rebalance import rebalance_with_counterfactual, summarize
    from experiments.studies.sections import build_cluster, solver_options
    from simulator.cluster.paths import build_route_table
    from traces.io import read_trace_meta

    cfg = rebalance_config(config)
    routes = build_route_table(build_cluster(config["topology"]))
    path = Path(config["trace"]["source"])
    t0 = pd.Timestamp.now()
    res = rebalance_with_counterfactual(path, routes, cfg,
                                        solver_options(config["strategy"], config["seed"]))
    row = {**summarize(res.timeline), "status": "complete",
           "sim_runtime_s": (pd.Timestamp.now() - t0).total_seconds()}
    knobs = {k: getattr(cfg, k) for k in KEYS if k != "origins"}
    knobs["origins"] = cfg.origins or "recorded, else dp"
    return row, knobs, res.timeline, read_trace_meta(path)[0].model.name, routes.cluster
