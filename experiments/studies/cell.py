"""Evaluate one cell of a study: build, fit, place, replay, count.  Pure of files it writes.

Runs in the driver (``--serial``) or in a Dask worker process; the result depends only on the
cell's configuration.  Clusters, route tables and traces are cached per process (keyed by the
canonical JSON of what builds them), so cells that share them do not rebuild them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.pipeline import build_problem, origin_activation, place_and_replay, summary_row
from experiments.studies.sections import (
    build_cluster,
    model_from_config,
    solver_options,
    split_sim_options,
)
from placement import SAMPLE_STRATEGIES, PlacementProblem, expected_cost
from placement.ceiling import Ceiling, hop_ceiling
from placement.ilp import server_cost
from placement.token_sample import token_sample
from simulator.cluster.paths import RouteTable, build_route_table
from traces import (
    ModelSpec,
    RoutingTrace,
    SynthConfig,
    generate_trace,
    read_trace,
)
from traces.infra.errors import InputError
from traces.load_stats import load_load_stats, load_stats_kind
from traces.origin_models import resolve_model
from traces.origins import apply_origins, tenant_server_sets
from traces.synthetic import TenantSpec

# Columns that measure wall-clock time: they differ between runs of the same cell.
TIMING_COLUMNS = ("solve_time_s", "sim_runtime_s")


@dataclass(frozen=True, eq=False)
class CellResult:
    """Frames of one evaluated cell (each carries no cell id; the runner adds it)."""

    row: dict[str, Any]
    links: pd.DataFrame
    tokens: pd.DataFrame
    layers: pd.DataFrame
    expert_load: pd.DataFrame
    server_load: pd.DataFrame
    utilisation: pd.DataFrame  # network link directions per time window
    timeline: pd.DataFrame | None = None  # rebalancing cells: one row per window

    def frames(self) -> dict[str, pd.DataFrame]:
        """The frames the cell has (a rebalancing cell has only its timeline)."""
        frames = {
            "links": self.links,
            "tokens": self.tokens,
            "layers": self.layers,
            "expert_load": self.expert_load,
            "server_load": self.server_load,
            "utilisation": self.utilisation,
            "timeline": self.timeline,
        }
        return {k: f for k, f in frames.items() if f is not None and len(f.columns)}


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _routes(topology_key: str) -> RouteTable:
    return build_route_table(build_cluster(json.loads(topology_key)))


@functools.lru_cache(maxsize=2)
def _synthetic(model_key: str, num_tokens: int, seq_len: int, servers_key: str, zipf: float,
               seed: int, tenants: int) -> RoutingTrace:
    """The cell's synthetic trace; ``tenants`` > 0: equal workloads, each with its own
    popularity, on its own contiguous block of servers (the generator records origins)."""
    model = ModelSpec.from_dict(json.loads(model_key))
    gpu_server = np.asarray(json.loads(servers_key))
    specs = tuple(
        TenantSpec(share=1.0, gpus=tuple(int(g) for g in np.flatnonzero(np.isin(gpu_server, s))),
                   name=f"tenant{k}")
        for k, s in enumerate(tenant_server_sets(int(gpu_server.max()) + 1, tenants))
    ) if tenants else ()
    return generate_trace(
        SynthConfig(model, num_tokens=num_tokens, seq_len=seq_len, step_tokens=num_tokens,
                    num_gpus=len(gpu_server), zipf_exponent=zipf, seed=seed, tenants=specs)
    )


@functools.lru_cache(maxsize=2)
def _file_trace(path: str) -> RoutingTrace:
    return read_trace(Path(path))


@dataclass(frozen=True, eq=False)
class Fit:
    """What a cell places with and replays."""

    activation: np.ndarray  # p[l, i]
    per_origin: np.ndarray | None  # a[l, i, g] when fitted on tokens
    replay: RoutingTrace  # with its origins set
    description: str
    tokens: RoutingTrace | None  # the fitted tokens (co-activation); None for load statistics


def fit_and_replay(config: dict[str, Any], model: ModelSpec, gpu_server: np.ndarray) -> Fit:
    """The activation to place with (and the fitted tokens), and the trace to replay.

    The cell's origin model (``trace.origins``) is applied to each whole trace before it is
    cut into fit and replay parts.
    """
    per_origin: np.ndarray | None = None
    fit: RoutingTrace | None = None
    t = config["trace"]
    num_gpus = len(gpu_server)
    origins = resolve_model(t["origins"], "trace.origins")

    def placed(trace: RoutingTrace) -> RoutingTrace:
        return apply_origins(trace, origins, gpu_server, "trace.origins")

    fit_n, replay_n = t["fit_tokens"], t["replay_tokens"]
    seed = config["seed"]
    fit_source = t["fit_source"]
    if t["source"] == "synthetic":
        total = replay_n + (0 if fit_source else fit_n)
        whole = _synthetic(_key(model.to_dict()), total, t["seq_len"],
                           _key(gpu_server.tolist()), float(t["zipf_exponent"]), seed,
                           t["tenants"])
    else:
        whole = _file_trace(t["source"])
    whole = placed(whole)
    if fit_source:
        replay = whole.take(slice(0, replay_n))
        if load_stats_kind(fit_source) != "trace":
            stats = load_load_stats(fit_source, model)
            activation = stats.activation()
            fit_desc = f"load statistics {Path(fit_source).name}"
        else:
            fit = placed(_file_trace(fit_source)).take(slice(0, fit_n))
            activation, per_origin, _ = origin_activation([fit], num_gpus)
            fit_desc = f"first {fit_n} tokens of {Path(fit_source).name}"
    else:
        fit = whole.take(slice(0, fit_n))
        replay = whole.take(slice(fit_n, fit_n + replay_n))
        activation, per_origin, _ = origin_activation([fit], num_gpus)
        src = "the synthetic trace" if t["source"] == "synthetic" else Path(t["source"]).name
        fit_desc = f"first {fit_n} tokens of {src}, replay the next {replay_n}"
    # a synthetic replay is one step: one micro-batch unless sim.microbatch_tokens re-cuts it
    return Fit(activation, per_origin, replay, fit_desc, fit)


def judged_problem(routes: RouteTable, model: ModelSpec, replay: RoutingTrace,
                   num_redundant: int) -> PlacementProblem:
    """The placement problem of the replayed tokens themselves (what a layout is judged on)."""
    p, a, _ = origin_activation([replay], routes.num_gpus)
    return build_problem(routes, model, p, origin_activation=a, num_redundant=num_redundant)


@dataclass(frozen=True, eq=False)
class SharedInputs:
    """What the cells of one group (same model, topology, trace and seed) share: the fitted
    and replayed tokens and the ceilings per redundant-copy count.  A Dask run builds it once
    per group and ships it to the workers (each would otherwise regenerate the traces)."""

    fit: Fit
    ceilings: dict[int, Ceiling]


def shared_key(config: dict[str, Any]) -> str:
    """The cells with equal keys share their :class:`SharedInputs` (the strategy apart)."""
    return _key({k: config[k] for k in ("model", "topology", "trace", "seed")})


def _cell_model(config: dict[str, Any]) -> ModelSpec:
    source = config["trace"]["source"]
    return (model_from_config(config["model"]) if source == "synthetic"
            else _file_trace(source).model)  # a replayed file brings its own model


def build_shared(config: dict[str, Any], strategies: list[dict[str, Any]]
                 ) -> SharedInputs | None:
    """The shared inputs of ``config``'s group for the cells of ``strategies``; None when they
    cannot be built (each cell then fails on its own, with its own reason)."""
    try:
        model = _cell_model(config)
        routes = _routes(_key(config["topology"]))
        fit = fit_and_replay(config, model, routes.cluster.gpu_server)
        redundants = sorted({strategy_redundant(t, model, routes.num_gpus) for t in strategies})
        return SharedInputs(fit, {r: hop_ceiling(judged_problem(routes, model, fit.replay, r))
                                  for r in redundants})
    except Exception:  # noqa: BLE001 - the cells report the failure
        return None


_CEILINGS: dict[tuple[str, int], Ceiling] = {}


def _ceiling(cell_key: str, num_redundant: int, judged: PlacementProblem) -> Ceiling:
    """The cell's ceiling, cached per (cell without its strategy, redundant copies)."""
    key = (cell_key, num_redundant)
    if key not in _CEILINGS:
        if len(_CEILINGS) >= 16:
            _CEILINGS.pop(next(iter(_CEILINGS)))
        _CEILINGS[key] = hop_ceiling(judged)
    return _CEILINGS[key]


def strategy_redundant(strategy: dict[str, Any], model: ModelSpec, num_gpus: int) -> int:
    """Redundant expert slots per MoE layer: the strategy's ``replicas`` ("auto": GPUs // 8);
    ``eplb`` without it gets the fewest that make (experts + redundant) a multiple of the GPU
    count."""
    r = strategy.get("replicas")
    if r == "auto":
        return max(1, num_gpus // 8)
    if r is not None:
        return int(r)
    if strategy["name"] == "eplb":
        return (-model.num_routed_experts) % num_gpus
    return 0


def cell_labels(config: dict[str, Any], model_name: str, cluster: Any) -> dict[str, Any]:
    """The columns that say which cell a row is (its setup), failed or not."""
    t, strategy = config["trace"], config["strategy"]
    return {
        "scenario": t["label"],
        "origins": t["origins"] or (f"{t['tenants']} tenants on their own servers"
                                    if t["tenants"] else "recorded, else dp"),
        "model": model_name,
        "topology": config["topology"]["family"],
        "cluster": cluster.name,
        "num_gpus": cluster.num_gpus,
        "num_servers": cluster.num_servers,
        "strategy": strategy.get("label", strategy["name"]),
        "seed": config["seed"],
    }


@dataclass(frozen=True)
class CellFailure:
    """A cell that could not be evaluated: its setup columns and the one-line reason."""

    row: dict[str, Any]


FAILED = "failed"  # the status of a failed cell's row


def evaluate_cell_or_failure(config: dict[str, Any], shared: SharedInputs | None = None
                             ) -> CellResult | CellFailure:
    """:func:`evaluate_cell`, with a failure (a solver finding no layout in its time limit, a
    replay that runs out of memory, ...) returned as a :class:`CellFailure` so that one cell
    never stops a study; Ctrl-C and worker deaths still stop it."""
    try:
        return evaluate_cell(config, shared)
    except Exception as exc:  # noqa: BLE001 - any failure of the cell is the cell's result
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, InputError):
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        try:
            name = _cell_model(config).name
            labels = cell_labels(config, name, _routes(_key(config["topology"])).cluster)
        except Exception:  # noqa: BLE001 - the labels are best effort; the reason is not
            labels = {"strategy": config["strategy"].get("label", config["strategy"]["name"]),
                      "scenario": config["trace"].get("label", ""), "seed": config["seed"]}
        return CellFailure({**labels, "status": FAILED, "failure": reason})


def evaluate_cell(config: dict[str, Any], shared: SharedInputs | None = None) -> CellResult:
    """Place and replay one cell; every number of its result row and detail frames.

    ``shared``: the cell group's :func:`build_shared` inputs (else built here, per process
    cached)."""
    if "rebalance" in config:  # a policy over time (experiments.studies.rebalance_cell)
        from experiments.studies.rebalance_cell import evaluate_rebalance_cell

        totals, knobs, timeline, model_name, cluster_ = evaluate_rebalance_cell(config)
        empty = pd.DataFrame()
        return CellResult({**totals, **cell_labels(config, model_name, cluster_), **knobs},
                          empty, empty, empty, empty, empty, empty, timeline=timeline)
    model = _cell_model(config)
    routes = _routes(_key(config["topology"]))
    cluster = routes.cluster
    fitted = shared.fit if shared is not None else fit_and_replay(config, model,
                                                                  cluster.gpu_server)
    activation, replay, fit_desc = fitted.activation, fitted.replay, fitted.description
    strategy = config["strategy"]
    if strategy["name"] in SAMPLE_STRATEGIES and fitted.tokens is None:
        raise InputError(
            f"strategy {strategy['name']} is fitted on per-token routing; the cell fits on load"
            f" statistics ({fit_desc}), which carry only counts per expert"
        )
    sim_config = split_sim_options(config["sim"])
    problem = build_problem(
        routes, model, activation, origin_activation=fitted.per_origin,
        num_redundant=strategy_redundant(strategy, model, cluster.num_gpus),
        balance_eps=strategy.get("balance_eps"), traffic=sim_config.traffic,
        sample=None if fitted.tokens is None else token_sample([fitted.tokens],
                                                               cluster.num_gpus),
    )
    options = solver_options(config["strategy"], config["seed"])
    ev = place_and_replay(problem, config["strategy"]["name"], replay, routes, sim_config, options)
    layout = ev.layout
    judged = judged_problem(routes, model, replay, problem.num_redundant)
    ceiling = (shared.ceilings[problem.num_redundant]
               if shared is not None and problem.num_redundant in shared.ceilings
               else _ceiling(shared_key(config), problem.num_redundant, judged))
    row = summary_row(ev)
    row.pop("strategy")  # the strategy's label (cell_labels, below) replaces its name
    covered = int(np.unique(replay.origin_gpu).size) if replay.origin_gpu is not None else 0
    row.update(
        origin_gpus=covered,
        judged_expected_hops_per_token=expected_cost(judged, layout),
        ceiling_hops_per_token=ceiling.hops_per_token,
        ceiling_kind=ceiling.kind,
        ceiling_note=ceiling.note,
    )
    row.update(cell_labels(config, model.name, cluster))
    row.update(
        replay_tokens=replay.num_tokens,
        microbatches=int(len(ev.sim.layers["microbatch"].unique())),
        fit=fit_desc,
    )
    links = ev.sim.links[
        ["link_dir", "link", "src", "dst", "tier", "weight", "bytes", "busy_s", "utilisation",
         "mean_queue_delay_s", "peak_queue_delay_s"]
    ].copy()
    tokens = ev.sim.tokens[["microbatch", "origin_gpu", "moe_latency_s"]].copy()
    layers = ev.sim.layers.copy()
    layer_idx = np.repeat(np.asarray(model.moe_layer_indices), model.num_routed_experts)
    expert_load = pd.DataFrame({
        "layer": layer_idx,
        "expert": np.tile(np.arange(model.num_routed_experts), model.num_moe_layers),
        "activation": activation.ravel(),
    })
    cost = server_cost(problem)
    prim = ev.layout.primary
    server_of = cluster.gpu_server[prim]
    load = np.bincount(server_of.ravel(), weights=activation.ravel(), minlength=len(cost))
    server_load = pd.DataFrame({
        "server": np.arange(len(cost)),
        "cost": cost,
        "load": load / model.num_moe_layers,
    })
    network = ev.sim.links.loc[ev.sim.links["weight"] > 0, "link_dir"]
    util = ev.sim.utilisation[ev.sim.utilisation["link_dir"].isin(network)].reset_index(drop=True)
    return CellResult(row, links, tokens, layers, expert_load, server_load, util)
