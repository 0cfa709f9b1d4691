"""Rows of the paper study on real routing: DeepSeek's ESFT logs (four tasks, V2-Lite geometry).

When the ESFT folder is present (``--esft DIR``, or ``shared/data/esft-routing`` beside the
checkout, or under ``$MOE_NETSIM_SHARED_DATA``), each task is imported once into the run's
``inputs/`` folder and the study gains, on the 16B-sized fabrics:

* *in-sample*: fit on a task's first N tokens and replay the same tokens (an upper estimate);
* *held-out*: fit on a task's first N tokens, replay its next N;
* *cross-task*: fit on one task's first N tokens, replay the next task's first N (expert
  popularity correlates only weakly between tasks, so this is the hard out-of-sample case);
* *tenant locality*: the first three tasks served each on its own third of the servers
  (``tenants:`` origin model; a token's tenant is its ``seq_id mod 3``, so the mixed traces
  number sequences 3 j + task), fitted on the first half of every task, replayed on the second.

Token origins are ``dp`` (balanced over all GPUs) in the first three kinds of rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from experiments.studies.sections import build_cluster
from experiments.study_trace import TRACE_DEFAULTS
from traces.importers import import_trace
from traces.infra.errors import InputError
from traces.io import read_trace, write_trace
from traces.origin_models import OriginModel
from traces.origins import tenant_server_sets
from traces.trace import RoutingTrace

ESFT_TASKS = ("intent", "law", "summary", "translation")
ESFT_STRATEGIES = ("round-robin", "ilp-load", "ilp-origin")
TENANT_TASKS = 3


def default_esft_dir() -> Path | None:
    """The ESFT folder of the shared data beside the checkout, when present."""
    root = os.environ.get("MOE_NETSIM_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "data"
    d = base / "esft-routing"
    return d if d.is_dir() else None


def _import_tasks(esft_dir: Path, inputs_dir: Path, tasks: tuple[str, ...]) -> dict[str, Path]:
    inputs_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for task in tasks:
        src = esft_dir / task
        if not src.is_dir():
            raise InputError(f"--esft {esft_dir}: no task folder {task!r}")
        dst = inputs_dir / f"esft-{task}.parquet"
        if not dst.is_file():
            import_trace("esft", src, dst)
        out[task] = dst
    return out


def _mixed(traces: list[RoutingTrace], half: str) -> RoutingTrace:
    """Tokens of several tasks interleaved one by one, sequence ids 3 j + task (tenant)."""
    n = len(traces)
    parts = []
    for k, t in enumerate(traces):
        mid = t.num_tokens // 2
        part = t.take(slice(0, mid) if half == "first" else slice(mid, 2 * mid))
        _, seq = np.unique(part.seq_id, return_inverse=True)
        parts.append((k, part, seq.astype(np.int64) * n + k))
    m = min(p.num_tokens for _, p, _ in parts)
    order = (np.arange(n)[None, :] * m + np.arange(m)[:, None]).ravel()  # token by token
    experts = np.concatenate([p.experts[:m] for _, p, _ in parts])[order]
    seq_id = np.concatenate([s[:m] for _, _, s in parts])[order]
    position = np.concatenate([p.position[:m] for _, p, _ in parts])[order]
    return RoutingTrace(meta=traces[0].meta, experts=experts, seq_id=seq_id, position=position)


def esft_cells(
    esft_dir: Path, inputs_dir: Path | None, quick: bool, topologies: list[dict[str, Any]],
    strategies: list[dict[str, Any]], skipped: list[str],
) -> list[list[Any]]:
    """``[model, topology, trace, strategy]`` rows of the ESFT part (files imported on demand)."""
    if inputs_dir is None:
        raise InputError("paper study: ESFT rows need a folder for the imported traces")
    rows = [p for p in strategies if p.get("label", p["name"]) in ESFT_STRATEGIES]
    if not rows:
        skipped.append("ESFT rows: none of their strategies " + ", ".join(ESFT_STRATEGIES)
                       + " was selected")
        return []
    tasks = ESFT_TASKS[:2] if quick else ESFT_TASKS  # quick: intent (and law to cross to)
    files = _import_tasks(esft_dir, inputs_dir, tuple(dict.fromkeys(tasks + ESFT_TASKS[:3])))
    n = 1024 if quick else 4096
    base = {**TRACE_DEFAULTS, "fit_tokens": n, "replay_tokens": n, "origins": "dp"}
    traces = []
    for i, task in enumerate(tasks[:1] if quick else tasks):
        f = str(files[task].resolve())
        nxt = tasks[(i + 1) % len(tasks)]  # the next task: every task is replayed once
        traces += [
            {**base, "source": f, "fit_source": f, "label": f"ESFT in-sample ({task})"},
            {**base, "source": f, "label": f"ESFT held-out ({task})"},
            {**base, "source": str(files[nxt].resolve()), "fit_source": f,
             "label": f"ESFT cross-task (fit {task}, replay {nxt})"},
        ]
    fit_path, replay_path = inputs_dir / "esft-tenants-fit.parquet", \
        inputs_dir / "esft-tenants-replay.parquet"
    if not (fit_path.is_file() and replay_path.is_file()):
        loaded = [read_trace(files[t]) for t in ESFT_TASKS[:TENANT_TASKS]]
        write_trace(fit_path, _mixed(loaded, "first"))
        write_trace(replay_path, _mixed(loaded, "second"))
    out = []
    for topo in topologies:
        servers = build_cluster(topo).num_servers
        origins = OriginModel("tenants", tenant_server_sets(servers, TENANT_TASKS)).text
        m = min(n, read_trace(replay_path).num_tokens)
        tenant_rows = [
            {**base, "fit_tokens": m, "replay_tokens": m,
             "source": str(replay_path.resolve()), "fit_source": str(fit_path.resolve()),
             "origins": origins, "label": "ESFT tenant locality, held-out"},
            {**base, "fit_tokens": m, "replay_tokens": m,
             "source": str(replay_path.resolve()), "fit_source": str(replay_path.resolve()),
             "origins": origins, "label": "ESFT tenant locality, in-sample"},
        ]
        for tr in traces + tenant_rows[:1 if quick else 2]:
            out += [[{}, topo, tr, p] for p in rows]
    return out
