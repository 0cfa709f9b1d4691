"""The reference paper's grid (arXiv 2508.09229) as data: models x topologies x strategies.

The paper evaluates DeepSeekMoE-16B and DeepSeek-R1 on FatTree, Dragonfly and a sparse
variant of each, placing experts with round-robin, greedy, its ILP and its load-aware ILP.
This project adds its own strategies as extra rows.  Topology families and strategies are looked up
by name in ``simulator.cluster.families.BUILDERS`` and ``placement.STRATEGIES``; entries this build
does not have (or whose parameters its builder rejects) are left out and listed in
``Study.skipped`` with the reason, never silently.

Cluster sizes.  A fully populated fat tree or canonical dragonfly gives every server the same
distances, so no placement can beat round-robin on hops (docs/howto/choose-strategy.md).  The paper
does not state its exact fabrics; here every model gets a fabric whose servers see different
distances: DeepSeekMoE-16B on 48 GPUs (6 servers of 8: a k=4 fat tree with one full pod of 4
servers and 2 servers in a second pod) and DeepSeek-R1 on 256 GPUs (32 servers of 8: a k=10 fat
tree with 25 servers in one pod and 7 in another, as in the demo), and sparse/dragonfly variants
of the same size.

Token origins: two scenarios per fabric.  *Even origins* (``dp``: tokens dealt over all
GPUs, as in decode with data-parallel attention): only the fabric's asymmetry can make one
layout better than another.  *Tenant locality*: 3 (6-server fabrics) or 4 (larger) equal
workloads, each with its own expert popularity, each served on its own contiguous block of
servers, so a placement that sees origins can bring a workload's favourite experts near it.
Sequences are one token long, so fit and replay parts both hold every origin.

Every cell also records its *ceiling* (``placement.ceiling``): the fewest expected hops any
layout can reach on the replayed tokens; the report shows the saving it allows beside each
saving.  Real routing rows (``experiments.studies.esft``) join when the ESFT data is present.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from experiments.studies.esft import esft_cells
from experiments.studies.sections import build_cluster
from experiments.studies.spec import Study, build_study
from experiments.study_trace import TRACE_DEFAULTS
from placement import STRATEGIES
from simulator.cluster.families import BUILDERS
from traces import model_preset, read_trace_meta
from traces.infra.errors import InputError
from traces.load_stats import load_load_stats, load_stats_kind
from traces.origin_models import check_cluster, parse_origins

PAPER_MODELS = ("deepseek-moe-16b", "deepseek-r1")
PAPER_STRATEGIES = ("round-robin", "greedy", "ilp", "ilp-load")
PROJECT_STRATEGIES = ("eplb", "ilp-bytes", "ilp-bottleneck", "ilp-origin", "ilp-load+replicas")
# Extra rows that are a strategy with options: label -> (strategy, keys of its table).  The
# replica count is set per cluster ("auto": GPUs // 8 redundant slots per MoE layer).
_VARIANTS = {"ilp-load+replicas": ("ilp-load", {"replicas": "auto"})}
# Per strategy call (the limit covers every HiGHS call and model build of the call).  The full
# grid's MIP-bound rows (ilp-bottleneck, ilp-load+replicas: 32 cells) stop at it on an idle
# machine, so it sets a quarter of the grid's CPU time: 30 s keeps the grid within 30 minutes
# on 2 cores; their gaps are in the results.
FULL_TIME_LIMIT_S = 30.0
QUICK_TIME_LIMIT_S = 60.0
ESFT_FABRICS = ("fat-tree-sparse", "dragonfly-sparse")  # the real-data rows' fabrics

# Dragonflies of the same sizes: 3 groups x 2 routers x 1 server = 6 servers (one global link
# per router, one per group pair) and 4 groups x 4 routers x 2 servers = 32 servers (two global
# links per router, two per group pair).
_DF_16B = {"routers_per_group": 2, "servers_per_router": 1, "global_links_per_router": 1,
           "num_groups": 3}
_DF_R1 = {"routers_per_group": 4, "servers_per_router": 2, "global_links_per_router": 2,
          "num_groups": 4}
# (family, params) per model size.  Sizes as in the module docstring; the sparse variants and
# the dragonfly take the parameters their issue names (a routers per group, p servers per
# router, h global links per router) and the number of servers to populate.
_FULL: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "deepseek-moe-16b": [
        ("fat-tree", {"k": 4, "num_servers": 6}),
        ("fat-tree-sparse", {"k": 4, "num_servers": 6}),
        ("dragonfly", _DF_16B),
        ("dragonfly-sparse", _DF_16B),
    ],
    "deepseek-r1": [
        ("fat-tree", {"k": 10, "num_servers": 32}),
        ("fat-tree-sparse", {"k": 10, "num_servers": 32}),
        ("dragonfly", _DF_R1),
        ("dragonfly-sparse", _DF_R1),
    ],
}
# --quick: 6 servers of 4 GPUs for both models, the two fabrics whose servers differ most.
_QUICK_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("fat-tree-sparse", {"k": 4, "num_servers": 6}),
    ("dragonfly-sparse", _DF_16B),
]
_QUICK_LINKS = {"gpus_per_server": 4}

# What the CLI prints per cell.
PAPER_COLUMNS = (
    "model", "topology", "scenario", "num_gpus", "strategy", "status", "hops_per_token",
    "hops_per_token_reduction_pct", "hops_ceiling_pct", "remote_copies_per_token_layer",
    "remote_routes_per_token_layer", "network_link_bytes", "max_link_utilisation",
    "latency_p50_ms", "latency_p99_ms", "solve_time_s",
)
# Scenarios of token origins (the trace table of a cell; TRACE_DEFAULTS fills the rest).
EVEN = "even origins"
TENANTS = "tenant locality"
# Rows that --quick runs (the MIP-heavy ones take minutes at the R1 size).
QUICK_STRATEGIES = ("round-robin", "ilp", "ilp-load", "ilp-origin")
# --quick replays micro-batches of 256 tokens (a synthetic replay is one, an ESFT replay four):
# the DES costs about the same per micro-batch at these sizes (every GPU pair exchanges a
# message per layer), and it is most of the quick study's time.  The full grid replays each
# cell's tokens as one micro-batch: at the R1 size (256 GPUs, 992 server pairs, every message
# below one 1 MiB chunk) a second micro-batch doubles the DES, which is half the grid's time.
QUICK_MICROBATCH_TOKENS = 256


def tenants_for(num_servers: int) -> int:
    """Tenants of the locality scenario: 3 on the 6-server fabrics, 4 on larger ones."""
    return 3 if num_servers <= 8 else 4


def _scenarios(trace_cfg: dict[str, Any], num_servers: int, synthetic: bool
               ) -> list[dict[str, Any]]:
    even = {**TRACE_DEFAULTS, **trace_cfg, "origins": "dp", "label": EVEN}
    if not synthetic:
        return [even]
    tenants = {**TRACE_DEFAULTS, **trace_cfg, "origins": "", "tenants": tenants_for(num_servers),
               "label": TENANTS}
    return [even, tenants]


def _topologies(model: str, quick: bool, experts: int) -> list[tuple[str, dict[str, Any]]]:
    if quick:
        return copy.deepcopy(_QUICK_PARAMS)
    key = model if model in _FULL else ("deepseek-r1" if experts > 64 else "deepseek-moe-16b")
    return copy.deepcopy(_FULL[key])


def paper_study(
    quick: bool = False,
    trace: Path | None = None,
    fit_trace: Path | None = None,
    tokens: int | None = None,
    seed: int = 0,
    model_names: tuple[str, ...] = PAPER_MODELS,
    strategy_names: tuple[str, ...] | None = None,
    esft_dir: Path | None = None,
    inputs_dir: Path | None = None,
    origins: str | None = None,
) -> Study:
    """The paper's grid, restricted to what this build has (the rest in ``skipped``)."""
    skipped: list[str] = []
    n = tokens if tokens is not None else (256 if quick else 4096)
    if n < 1:
        raise InputError(f"--tokens must be >= 1, got {n}")
    trace_cfg: dict[str, Any] = {"fit_tokens": n, "replay_tokens": n, "seq_len": 1}
    if trace is not None:
        models, n = _trace_model(trace, fit_trace, tokens, n, trace_cfg)
    else:
        models = _preset_models(model_names)
    if fit_trace is not None:
        models = _fit_models(Path(fit_trace), trace is None, models, trace_cfg, skipped)
    combos = _combos(models, quick, trace_cfg, origins, skipped)
    time_limit_s = QUICK_TIME_LIMIT_S if quick else FULL_TIME_LIMIT_S
    rows = _strategy_rows(strategy_names, quick)
    strategies = [t for t in (_strategy_table(p, time_limit_s, skipped) for p in rows) if t]
    cells = [[table, topo, tr, pl] for table, topo, tr in combos for pl in strategies]
    if esft_dir is not None and trace is None and fit_trace is None and not origins:
        fabrics = [{"family": f, "params": p, "links": dict(_QUICK_LINKS) if quick else {}}
                   for f, p in (_QUICK_PARAMS if quick else _FULL["deepseek-moe-16b"])
                   if f in ESFT_FABRICS[:1 if quick else 2] and f in BUILDERS]
        cells += esft_cells(esft_dir, inputs_dir, quick, fabrics, strategies, skipped)
    raw = {
        "seed": seed,
        "study": {
            "name": "paper" + (" (quick)" if quick else ""),
            "description": (
                "The grid of arXiv 2508.09229: models x topologies x strategies, with even token"
                " origins and with tenants on their own servers; hops per token is the"
                " paper's metric, the rest is this project's simulation. Every saving stands"
                " beside its ceiling, the most any layout could save on the replayed tokens."
            ),
            "baseline": "round-robin",
        },
        "strategy": strategies[0],
        "trace": cells[0][2],
        "axes": {"model, topology, trace, strategy": cells},
        "sim": {"microbatch_tokens": QUICK_MICROBATCH_TOKENS if quick else n},
    }
    return build_study(raw, where="paper study", skipped=tuple(skipped))


# (name, model table, routed experts) of each model row of the grid
_ModelRow = tuple[str, dict[str, Any], int]


def _trace_model(trace: Path, fit_trace: Path | None, tokens: int | None, n: int,
                 trace_cfg: dict[str, Any]) -> tuple[list[_ModelRow], int]:
    """A replayed trace's model, and the tokens per side it allows (``--tokens`` unset: as
    many as it holds); sets the trace section's source and token counts."""
    if not Path(trace).is_file():
        raise InputError(f"--trace {trace}: file not found")
    if Path(trace).suffix == ".json":
        raise InputError(
            f"--trace {trace}: load statistics hold no tokens to replay; give them as"
            " --fit (the synthetic generator then provides the replay)"
        )
    meta, have = read_trace_meta(trace)
    need = n if fit_trace else 2 * n
    if have < need:
        if tokens is not None:
            raise InputError(
                f"--trace {trace}: has {have} tokens, --tokens {n} needs {need}"
            )
        n = have if fit_trace else have // 2
        trace_cfg.update(fit_tokens=max(n, 1), replay_tokens=max(n, 1))
    trace_cfg["source"] = str(Path(trace).resolve())
    return [(meta.model.name, {}, meta.model.num_routed_experts)], n


def _preset_models(model_names: tuple[str, ...]) -> list[_ModelRow]:
    models = []
    for name in model_names:
        if name not in PAPER_MODELS:
            raise InputError(
                f"--model {name!r}: the paper's models are {', '.join(PAPER_MODELS)}"
            )
        models.append((name, {"preset": name}, model_preset(name).num_routed_experts))
    return models


def _fit_models(fit_path: Path, synthetic: bool, models: list[_ModelRow],
                trace_cfg: dict[str, Any], skipped: list[str]) -> list[_ModelRow]:
    """``--fit`` as the trace section's fit_source; load statistics fitting a synthetic
    replay keep only the models they fit (the others go to ``skipped``)."""
    if not fit_path.is_file():
        raise InputError(f"--fit {fit_path}: file not found")
    trace_cfg["fit_source"] = str(fit_path.resolve())
    if load_stats_kind(fit_path) == "trace" or not synthetic:
        return models
    keep = []
    for name, table, experts in models:
        try:
            load_load_stats(fit_path, model_preset(name))
            keep.append((name, table, experts))
        except InputError as exc:
            skipped.append(f"model {name}: load statistics do not fit it ({exc})")
    if not keep:
        raise InputError(f"--fit {fit_path}: fits neither of {PAPER_MODELS}")
    return keep


def _combos(models: list[_ModelRow], quick: bool, trace_cfg: dict[str, Any],
            origins: str | None, skipped: list[str]
            ) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(model, topology, trace) tables of the grid: every model on each fabric this build can
    build, under each origin scenario (or the user's origin model)."""
    synthetic = "source" not in trace_cfg
    combos: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for name, table, experts in models:
        for family, params in _topologies(name, quick, experts):
            topo = {"family": family, "params": params, "links": dict(_QUICK_LINKS) if quick
                    else {}}
            label = f"{name} on {family} {params}"
            if family not in BUILDERS:
                skipped.append(
                    f"{label}: topology family {family!r} is not in"
                    " simulator.cluster.families.BUILDERS"
                    f" (this build has: {', '.join(sorted(BUILDERS))})"
                )
                continue
            try:
                cluster = build_cluster(topo)
            except InputError as exc:
                skipped.append(f"{label}: the builder rejects these parameters ({exc})")
                continue
            scenarios = _scenarios(trace_cfg, cluster.num_servers, synthetic)
            if origins:  # one scenario: the user's origin model
                model_ = parse_origins(origins)
                check_cluster(model_, cluster.num_servers, f"--origins ({label})")
                scenarios = [{**scenarios[0], "origins": model_.text,
                              "label": f"origins {model_.text}"}]
            for trace_table in scenarios:
                combos.append((table, topo, trace_table))
    if not combos:
        raise InputError("paper study: no topology of the grid can be built in this build")
    return combos


def _strategy_rows(strategy_names: tuple[str, ...] | None, quick: bool) -> tuple[str, ...]:
    rows: tuple[str, ...] = PAPER_STRATEGIES + PROJECT_STRATEGIES
    if strategy_names is not None:
        unknown = [p for p in strategy_names if p not in rows]
        if unknown:
            raise InputError(f"--strategy {unknown[0]!r}: the study's rows are {', '.join(rows)}")
        return tuple(p for p in rows if p in strategy_names)
    return QUICK_STRATEGIES if quick else rows


def _strategy_table(row: str, time_limit_s: float, skipped: list[str]) -> dict[str, Any] | None:
    strategy, extra = _VARIANTS.get(row, (row, {}))
    if strategy not in STRATEGIES:
        skipped.append(f"strategy {row!r} is not in placement.STRATEGIES (this build has:"
                       f" {', '.join(sorted(STRATEGIES))})")
        return None
    table: dict[str, Any] = {"name": strategy, "options": {"time_limit_s": time_limit_s}}
    if row != strategy:
        table["label"] = row
    table.update(extra)
    return table
