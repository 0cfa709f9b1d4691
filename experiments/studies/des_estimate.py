"""A study cell's DES replay counted before it runs, as ``simulate --mode des`` counts its own.

A cell's trace and layout are made inside the cell, but what its DES costs (hop events of
chunk trains, :mod:`simulator.des_cost`) depends on the tokens per micro-batch, the cluster,
the dispatch scheme and how the experts spread over the GPUs far more than on the exact
layout.  So the driver builds each DES cell's cluster and the first micro-batch of its replay
(a synthetic trace generates just that micro-batch, with the cell's model, seed, skew and
origins; a trace file is read and cut as the cell cuts it), places it round-robin (the stand-in
layout, one copy per expert) and counts its hop events, scaled to the cell's replayed tokens.
Cells that differ only in their strategy share one count (cache keyed by cluster, ``[sim]``
table and trace specification).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from traces.infra.limits import CellWork


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _replay_hop_events(topology_key: str, sim_key: str, trace_key: str, model_key: str,
                       seed: int) -> float:
    """Hop events of a DES replay of the cell's ``trace.replay_tokens``: its first
    micro-batch's count x replayed tokens / that micro-batch's tokens."""
    from experiments.studies.cell import _routes, _synthetic
    from experiments.studies.estimates import des_replay_hop_events
    from experiments.studies.sections import model_from_config, split_sim_options
    from traces import read_trace
    from traces.origin_models import resolve_model
    from traces.origins import apply_origins

    routes = _routes(topology_key)
    sim = split_sim_options(json.loads(sim_key))
    t = json.loads(trace_key)
    gpu_server = routes.cluster.gpu_server
    replay_n = int(t["replay_tokens"])
    if t["source"] == "synthetic":
        model = model_from_config(json.loads(model_key))
        first_n = min(replay_n, sim.microbatch_tokens or replay_n)  # one step, re-cut or not
        trace = _synthetic.__wrapped__(_key(model.to_dict()), first_n, t["seq_len"],
                                       _key(gpu_server.tolist()), float(t["zipf_exponent"]),
                                       seed, t["tenants"])
        replay_tokens = replay_n
    else:
        whole = read_trace(Path(t["source"]))
        start = 0 if t["fit_source"] else int(t["fit_tokens"])
        trace = whole.take(slice(start, start + replay_n))
        replay_tokens = trace.num_tokens
    trace = apply_origins(trace, resolve_model(t["origins"], "trace.origins"), gpu_server,
                          "trace.origins")
    return des_replay_hop_events(trace, routes, sim.microbatch_tokens, sim.traffic,
                                 replay_tokens)


@functools.lru_cache(maxsize=64)
def _rebalance_hop_events(topology_key: str, source: str, origins: str | None,
                          server_dedup: bool) -> float | None:
    """Hop events of a DES rebalancing replay of the trace ``source``, as ``rebalance`` counts
    them: its first step's (round-robin stand-in) scaled to the trace's tokens."""
    from experiments.rebalance_window import sim_config
    from experiments.studies.cell import _routes
    from simulator.des_cost import trace_hop_events
    from traces.io import read_trace_meta

    return trace_hop_events(Path(source), _routes(topology_key), origins,
                            sim_config(server_dedup).traffic, read_trace_meta(Path(source))[1])


def cell_des_hop_events(config: dict[str, Any]) -> float | None:
    """Hop events of the cell's DES replay (None: the cell runs none, another mode)."""
    from experiments.studies.sections import split_sim_options

    if "rebalance" in config:
        from experiments.studies.rebalance_cell import rebalance_config

        cfg = rebalance_config(config)
        if cfg.mode != "des":
            return None
        return _rebalance_hop_events(_key(config["topology"]), str(config["trace"]["source"]),
                                     cfg.origins, cfg.server_dedup)
    if split_sim_options(config["sim"]).mode != "des":
        return None
    return _replay_hop_events(_key(config["topology"]), _key(config["sim"]),
                              _key(config["trace"]), _key(config["model"]),
                              int(config["seed"]))


def with_des_counts(configs: list[dict[str, Any]], works: list[CellWork]) -> list[CellWork]:
    """``works`` with each DES cell's replay counted in hop events (:class:`CellWork.counted`);
    a cell that cannot be built keeps its per-token count (it fails on its own when it runs)."""
    from traces.infra.errors import InputError

    out = []
    for config, work in zip(configs, works, strict=True):
        try:
            events = cell_des_hop_events(config)
        except (InputError, OSError, ValueError):
            events = None
        out.append(work if events is None else work.counted(events))
    return out

