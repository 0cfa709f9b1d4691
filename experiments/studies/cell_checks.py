"""Validation of one study cell: the keys each section may hold and the checks between them.

:func:`validate_cell` builds the model, the cluster, the solver and simulator options and reads
the metadata of any trace file, so a cell that passes cannot fail on its configuration later.
Every step raises :class:`InputError` naming the cell (``where``) and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.studies.sections import (
    build_cluster,
    check_table,
    expect_int,
    model_from_config,
    registered_name,
    solver_options,
    split_sim_options,
)
from experiments.study_trace import TRACE_DEFAULTS, check_trace_numbers
from placement import STRATEGIES
from placement.strategies import SUPPORTS
from simulator.cluster.failures import WHATIF_KEYS
from simulator.cluster.topology import ClusterSpec
from traces import ModelSpec, read_trace_meta
from traces.infra.errors import InputError
from traces.load_stats import load_load_stats, load_stats_kind
from traces.origin_models import check_cluster, resolve_model
from traces.origins import tenant_server_sets

STUDY_KEYS = ("name", "description", "baseline")
TOPOLOGY_KEYS = ("family", "params", "links", *WHATIF_KEYS)
STRATEGY_KEYS = ("name", "options", "replicas", "balance_eps", "label")


def validate_cell(config: dict[str, Any], where: str = "study") -> dict[str, Any]:
    """Check one cell's configuration completely; return facts the runner reuses
    (``model``, ``cluster``, ``sim``)."""
    seed = expect_int(config.get("seed"), f"{where}: seed", 0)
    topo, strategy, trace = _check_sections(config, where)
    _check_strategy(strategy, where)
    solver_options(strategy, seed, f"{where}: strategy")
    sim = split_sim_options(config["sim"], f"{where}: sim")
    cluster = build_cluster(topo, f"{where}: topology")
    if "rebalance" in config:  # a policy over time: experiments.studies.rebalance_cell
        from experiments.studies.rebalance_cell import validate_rebalance_cell

        return {"model": validate_rebalance_cell(config, cluster, where), "cluster": cluster,
                "sim": sim}

    _check_trace_options(trace, cluster, where)
    model = _source_model(config, trace, where)
    if trace["fit_source"]:
        _check_fit_source(Path(trace["fit_source"]), model, trace["fit_tokens"], where)
    sim.traffic.check_cluster_byte_counts(
        model, trace["replay_tokens"], cluster, f"{where}: trace.replay_tokens",
        "replay fewer tokens or give a smaller hidden size or fewer bytes per element")
    return {"model": model, "cluster": cluster, "sim": sim}


def _check_sections(
    config: dict[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The sections' keys and types; returns the topology, strategy and trace tables."""
    check_table(config["study"], f"{where}: study", STUDY_KEYS)
    topo = check_table(config["topology"], f"{where}: topology", TOPOLOGY_KEYS)
    for sub in ("params", "links"):
        if not isinstance(topo.get(sub, {}), dict):
            raise InputError(f"{where}: topology.{sub}: expected a table")
    strategy = check_table(config["strategy"], f"{where}: strategy", STRATEGY_KEYS)
    trace = check_table(config["trace"], f"{where}: trace", tuple(TRACE_DEFAULTS))
    if not isinstance(config["sim"], dict):
        raise InputError(f"{where}: sim: expected a table")
    if not isinstance(config["model"], dict):
        raise InputError(f"{where}: model: expected a table")
    return topo, strategy, trace


def _check_strategy(strategy: dict[str, Any], where: str) -> None:
    """The strategy's name, and that it supports the replicas or balance it is asked for."""
    registered_name(strategy.get("name"), STRATEGIES, "placement strategy",
                    f"{where}: strategy.name")
    if "replicas" in strategy and strategy["replicas"] != "auto":
        expect_int(strategy["replicas"], f"{where}: strategy.replicas", 0)
    if "balance_eps" in strategy:
        eps = strategy["balance_eps"]
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1e6:
            raise InputError(f"{where}: strategy.balance_eps: expected a number > 0, got {eps!r}")
    wants = {"replicas": strategy.get("replicas") not in (None, 0),
             "balance": strategy.get("balance_eps") is not None}
    for what, asked in wants.items():
        if asked and what not in SUPPORTS[strategy["name"]]:
            key = "replicas" if what == "replicas" else "balance_eps"
            raise InputError(f"{where}: strategy.{key}: strategy {strategy['name']} does not"
                             " support it; drop the key for this strategy or use another one")
    if "label" in strategy and not isinstance(strategy["label"], str):
        raise InputError(f"{where}: strategy.label: expected a string")


def _check_trace_options(trace: dict[str, Any], cluster: ClusterSpec, where: str) -> None:
    """The trace section's numbers, strings, tenants and origin model against the cluster."""
    check_trace_numbers(trace, where)  # the ranges of the flags that set the same knobs
    for key in ("source", "fit_source", "origins", "label"):
        if not isinstance(trace[key], str):
            raise InputError(f"{where}: trace.{key}: expected a string")
    tenants = trace["tenants"]
    if tenants:
        if trace["source"] != "synthetic":
            raise InputError(f"{where}: trace.tenants: only the synthetic generator has tenants")
        if trace["origins"]:
            raise InputError(f"{where}: trace.tenants puts every tenant on its own servers;"
                             " leave trace.origins empty")
        tenant_server_sets(cluster.num_servers, tenants)  # raises when there are too many
    origins = resolve_model(trace["origins"], f"{where}: trace.origins")
    if origins is not None:
        check_cluster(origins, cluster.num_servers, f"{where}: trace.origins")


def _source_model(config: dict[str, Any], trace: dict[str, Any], where: str) -> ModelSpec:
    """The replayed model: ``[model]`` for a synthetic trace, else the trace file's own (which
    must hold enough tokens and agree with any ``[model]`` given)."""
    if trace["source"] == "synthetic":
        return model_from_config(config["model"], f"{where}: model")
    path = Path(trace["source"])
    if path.suffix == ".json" or path.is_file() and load_stats_kind(path) != "trace":
        raise InputError(
            f"{where}: trace.source: {path} looks like load statistics, which hold no tokens"
            " to replay; give them as trace.fit_source and replay a trace or 'synthetic'"
        )
    meta, n = _trace_meta(path, f"{where}: trace.source")
    model: ModelSpec = meta.model
    if config["model"]:
        given = model_from_config(config["model"], f"{where}: model")
        if given != model:
            raise InputError(
                f"{where}: model: {given.name!r} differs from the model of trace.source"
                f" {path} ({model.name!r}); leave [model] out when replaying a file"
            )
    need = trace["replay_tokens"] + (0 if trace["fit_source"] else trace["fit_tokens"])
    if n < need:
        raise InputError(
            f"{where}: trace.source: {path} has {n} tokens but fit_tokens + replay_tokens"
            f" = {need}; lower them or give a longer trace"
        )
    return model


def _check_fit_source(fpath: Path, model: ModelSpec, fit_tokens: int, where: str) -> None:
    """A separate fitting file: load statistics of ``model``, or a trace of it long enough."""
    if not fpath.is_file():
        raise InputError(f"{where}: trace.fit_source: {fpath}: file not found")
    if load_stats_kind(fpath) != "trace":
        try:
            load_load_stats(fpath, model)
        except InputError as exc:
            raise InputError(f"{where}: trace.fit_source: {exc}") from None
        return
    fmeta, fn = _trace_meta(fpath, f"{where}: trace.fit_source")
    if fmeta.model != model:
        raise InputError(
            f"{where}: trace.fit_source: {fpath} is a {fmeta.model.name!r} trace but the"
            f" replayed model is {model.name!r}"
        )
    if fn < fit_tokens:
        raise InputError(
            f"{where}: trace.fit_source: {fpath} has {fn} tokens, fewer than"
            f" trace.fit_tokens = {fit_tokens}"
        )


def _trace_meta(path: Path, where: str) -> tuple[Any, int]:
    if not path.is_file():
        raise InputError(f"{where}: {path}: trace file not found")
    try:
        return read_trace_meta(path)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
