"""``moe-netsim trace import`` and ``moe-netsim trace stats``.

import: recorded routing (ESFT logs, vLLM arrays, a long table) into the native trace format,
or SGLang ``logical_count`` JSON into a load-statistics Parquet file.
stats: per-layer activation, co-activation, adjacent-layer transitions, load imbalance and,
under a layout, per-GPU load, as Parquet tables plus a heatmap of expert load per layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.commands.cluster_args import (
    add_cluster_arguments,
    cluster_from_args,
    cluster_label,
)
from experiments.options import add_number, add_option
from experiments.outputs import TRACE_OR_LOAD_STATS, add_output_argument, run_directory_kind
from experiments.progress import Feedback, add_progress_arguments
from traces.importers.formats import COUNT_FORMATS, TRACE_FORMATS
from traces.infra.errors import InputError
from traces.infra.options import Range
from traces.origin_models import OriginOptions

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from simulator.cluster.topology import ClusterSpec
    from traces.model import ModelSpec
    from traces.stats import TraceStats
    from traces.trace import RoutingTrace

FORMATS = tuple(sorted(TRACE_FORMATS.keys() | COUNT_FORMATS.keys()))


def register(trace_sub: argparse._SubParsersAction) -> None:
    """Add ``import`` and ``stats`` to the ``trace`` group."""
    p = trace_sub.add_parser(
        "import",
        help="Convert recorded routing (serving engines, ESFT, arrays, tables) or load counts.",
        description=(
            "Formats (docs/howto/engines/ says which engine version each follows): "
            + "; ".join(f"{k}: {v}" for k, v in sorted(TRACE_FORMATS.items()))
            + ". Inputs that hold counts, not tokens ("
            + "; ".join(f"{k}: {v}" for k, v in sorted(COUNT_FORMATS.items()))
            + ") become a load-statistics Parquet file. The output appears only when complete."
        ),
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="Input format.")
    p.add_argument("input", type=Path, help="Input file or folder.")
    add_output_argument(p, "--out", TRACE_OR_LOAD_STATS, required=True,
                        help="Output .parquet file.")
    p.add_argument(
        "--model",
        default=None,
        help="Model preset name or a JSON file of custom geometry (required for vllm, table).",
    )
    add_number(p, "--ranks", int, None, "sglang-dump: the number of ranks the dump must hold"
               " (default: highest found + 1).", "ranks", Range(1, 2**20))
    p.add_argument(
        "--physical-map",
        type=Path,
        default=None,
        help="sglang-routed, vllm-routed: JSON {'physical_to_logical_map': [layers][P]} when the"
        " recorded ids are physical (EPLB on); default: ids are logical.",
    )
    p.add_argument("--indices-column", default=None, help="topk-parquet: the top-k indices column.")
    p.add_argument("--scores-column", default=None, help="topk-parquet: the top-k scores column.")
    add_option(p, OriginOptions, "origins", "--origins",
               more=" Written into the trace; needs --gpus.")
    add_number(p, "--gpus", int, None, "GPUs of the cluster the --origins model deals tokens"
               " over.", "GPUs", Range(1, 2**20))
    add_number(p, "--gpus-per-server", int, 8, "GPUs per server, for --origins server sets.",
               "GPUs", Range(1, 2**10))
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a trace or load-statistics file moe-netsim wrote.")
    add_progress_arguments(p)
    p.set_defaults(func=run_import)

    s = trace_sub.add_parser(
        "stats",
        help="Routing statistics of a trace as Parquet tables plus an expert-load heatmap.",
    )
    s.add_argument(
        "trace", type=Path,
        help="Native trace (.parquet) or load statistics (SGLang logical_count .json, or the"
        " .parquet of `trace import --format sglang`; no co-activation or transitions then).",
    )
    s.add_argument(
        "--model", default=None,
        help="Model preset or JSON, for an SGLang JSON whose geometry matches no preset.",
    )
    add_output_argument(s, "--out", run_directory_kind("trace stats"), required=True,
                        help="Output directory.")
    s.add_argument(
        "--layout",
        type=Path,
        default=None,
        help="Layout: .npy int array [layers, experts(, replicas)] of GPU ids, or the tidy"
        " layout table (.parquet/.csv: layer, expert[, replica], gpu).",
    )
    add_cluster_arguments(s, required=False,
                          help_file="Cluster file: number of GPUs, servers, and nearest-replica"
                                    " choice.")
    s.add_argument(
        "--no-pairs",
        action="store_true",
        help="Skip co-activation and transitions (they cost top_k^2 per token and layer).",
    )
    s.add_argument("--overwrite", action="store_true",
                   help="Replace a run directory an earlier `trace stats` wrote.")
    add_progress_arguments(s)
    s.set_defaults(func=run_stats)


def _model(arg: str | None) -> ModelSpec | None:
    from traces.model import load_model_spec

    return None if arg is None else load_model_spec(arg)


def run_import(args: argparse.Namespace) -> int:
    from traces.importers import holds_counts, import_load_stats, import_trace
    from traces.io import read_trace_meta
    from traces.load_stats import save_load_stats
    from traces.origin_models import parse_origins
    from traces.origins import OriginAssigner, servers_of_gpus

    out: Path = args.out
    if out.suffix != ".parquet":
        raise InputError(f"{out}: the output must be a .parquet file")
    t0 = time.perf_counter()
    model = _model(args.model)
    assigner = None
    if args.origins or args.gpus is not None:
        if not args.origins or args.gpus is None:
            raise InputError("--origins and --gpus come together (the model deals tokens over"
                             " the GPUs of a cluster of that size)")
        if holds_counts(args.format, args.input):
            raise InputError("--origins: load counts hold no tokens to give origins to")
        model_ = parse_origins(args.origins)
        assigner = OriginAssigner(model_,
                                  servers_of_gpus(args.gpus, args.gpus_per_server, model_))
    if holds_counts(args.format, args.input):
        stats = import_load_stats(args.format, args.input, model)
        save_load_stats(out, stats)
        tokens = stats.counts.sum(axis=1) / stats.model.top_k
        print(
            f"wrote {out}: load statistics of {stats.model.name}, {stats.model.num_moe_layers}"
            f" MoE layers x {stats.model.num_routed_experts} experts, {tokens.max():,.0f} tokens"
            f" per layer (max) in {time.perf_counter() - t0:.1f}s"
        )
        return 0
    feedback = Feedback.from_args(args)
    n = import_trace(
        args.format, args.input, out, model, options=_import_options(args, model),
        origins=assigner,
        observe=lambda blocks: feedback.tokens(blocks, None, f"trace import {args.format}"),
    )
    warning = assigner.warning() if assigner is not None else None
    if warning:
        print(warning, file=sys.stderr)
    meta, _ = read_trace_meta(out)
    print(
        f"wrote {out}: {n:,} tokens of {meta.model.name} ({meta.model.num_moe_layers} MoE"
        f" layers, top-{meta.model.top_k}) in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _import_options(args: argparse.Namespace, model: ModelSpec | None) -> dict[str, object]:
    """The format-specific options, refused where the format does not use them."""
    used = {
        "ranks": ("sglang-dump",),
        "physical_map": ("sglang-routed", "vllm-routed"),
        "indices_column": ("topk-parquet",),
        "scores_column": ("topk-parquet",),
    }
    options: dict[str, object] = {}
    for name, formats in used.items():
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if args.format not in formats:
            raise InputError(f"{flag} applies to --format {', '.join(formats)}, not {args.format}")
        options[name] = value
    if isinstance(options.get("ranks"), int) and options["ranks"] < 1:  # type: ignore[operator]
        raise InputError(f"--ranks {options['ranks']}: must be at least 1")
    if "physical_map" in options:
        options["physical_map"] = _physical_map(Path(str(options["physical_map"])), model)
    return options


def _physical_map(path: Path, model: ModelSpec | None) -> np.ndarray:
    import numpy as np

    from traces.importers.engine_arrays import check_physical_map
    from traces.infra.jsonfile import read_json_file

    obj = read_json_file(path, "physical map")
    rows = obj.get("physical_to_logical_map") if isinstance(obj, dict) else None
    try:
        arr = np.asarray(rows, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"{path}: physical_to_logical_map must be an integer [layers][P] table"
        ) from None
    if model is None:
        raise InputError("--physical-map needs --model")
    return check_physical_map(arr, model, str(path))


def _load_layout(path: Path, model: ModelSpec, num_gpus: int | None) -> np.ndarray:
    """expert_gpus [layers, experts, replicas] (-1 = no replica)."""
    import numpy as np
    import pandas as pd

    from placement.layout_io import layout_from_frame

    if not path.exists():
        raise InputError(f"{path}: layout file not found")
    L, E = model.num_moe_layers, model.num_routed_experts
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot read the layout array ({exc})") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[:2] != (L, E) or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"{path}: layout must be an integer array [{L} layers, {E} experts(, replicas)]"
                f" of GPU ids, got {arr.dtype} {list(arr.shape)}"
            )
        arr = arr.astype(np.int64)
        if (arr[:, :, 0] < 0).any() or arr.min() < -1:
            raise InputError(f"{path}: every expert needs a GPU id >= 0 (-1 only for no replica)")
        if num_gpus is not None and arr.max() >= num_gpus:
            raise InputError(
                f"{path}: layout names GPU {int(arr.max())}, the cluster has {num_gpus} GPUs"
            )
        return arr
    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{path}: cannot read layout ({exc.__class__.__name__}: {exc})") from None
    if num_gpus is None:
        if "gpu" not in df.columns or df.empty:
            raise InputError(f"{path}: column 'gpu' missing or table empty")
        num_gpus = int(df["gpu"].max()) + 1
    layout = layout_from_frame(df, L, E, num_gpus, model.moe_layer_indices, str(path))
    return layout.expert_gpus


def run_stats(args: argparse.Namespace) -> int:
    from experiments.outputs import run_directory, write_json
    from experiments.versions import versions
    from traces.io import iter_trace, read_trace_meta
    from traces.load_stats import load_load_stats, load_stats_kind
    from traces.stats import stats_from_counts, summarize_trace

    t0 = time.perf_counter()
    load = None  # counts only (SGLang JSON or imported load statistics): no per-token pairs
    if load_stats_kind(args.trace) == "trace":
        model = read_trace_meta(args.trace)[0].model
    else:
        load = load_load_stats(args.trace, _model(args.model))
        model = load.model
    pairs = not args.no_pairs and load is None
    cluster = cluster_from_args(args)
    if cluster is not None and args.layout is None:
        raise InputError(
            "--topology/--fat-tree is used with --layout (per-GPU load); pass a layout too")
    hosts = None
    expert_gpus = None
    num_gpus = 0
    if args.layout is not None:
        expert_gpus = _load_layout(args.layout, model, cluster.num_gpus if cluster else None)
        num_gpus = cluster.num_gpus if cluster else int(expert_gpus.max()) + 1
        if load is None:
            hosts = _host_function(expert_gpus, cluster, num_gpus, args.layout)
    with run_directory(args.out, args.overwrite) as work:
        if load is None:
            blocks = Feedback.from_args(args).tokens(
                iter_trace(args.trace), read_trace_meta(args.trace)[1], "trace stats")
            stats = summarize_trace(blocks, pairs=pairs, hosts=hosts, num_gpus=num_gpus)
        else:
            stats = stats_from_counts(model, load.counts, expert_gpus, num_gpus, str(args.trace))
        n = stats.num_tokens
        layer_load = _write_stats(work, stats, model, pairs, cluster)
        write_json(
            work / "meta.json",
            {
                "command": "moe-netsim trace stats",
                "trace": str(args.trace),
                "layout": None if args.layout is None else str(args.layout),
                "topology": cluster_label(args),
                "model": model.to_dict(),
                "tokens": n,
                "input": "trace" if load is None else "load statistics",
                "pairs": pairs,
                "versions": versions(),
                "status": "complete",
            },
        )
    if args.layout is not None and cluster is not None:
        from experiments.layout_record import foreign_layout_warning

        warning = foreign_layout_warning(args.layout, cluster, cluster_label(args) or "")
        if warning:
            print(warning, file=sys.stderr)
    worst = layer_load.loc[layer_load["imbalance_max_over_mean"].idxmax()]
    what = f"{n:,} tokens" if load is None else f"load statistics of about {n:,} tokens"
    print(
        f"wrote {args.out}/: {what}, {model.num_moe_layers} MoE layers; highest expert"
        f" imbalance {worst['imbalance_max_over_mean']:.2f} (max/mean) at layer"
        f" {int(worst['layer'])}; {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _write_stats(work: Path, stats: TraceStats, model: ModelSpec, pairs: bool,
                 cluster: ClusterSpec | None) -> pd.DataFrame:
    """The statistics' tables and the expert-load heat map; returns the per-layer load."""
    import matplotlib.pyplot as plt

    from experiments import plots
    from experiments.outputs import save_figure, write_parquet
    from traces.stats import (
        activation_frame,
        activation_probability,
        coactivation_frame,
        gpu_load_frame,
        summarize_gpu_load,
        summarize_load,
        transition_frame,
    )

    layer_load = summarize_load(stats.counts, model)
    write_parquet(work / "activation.parquet", activation_frame(stats))
    if stats.gpu_routes is not None:
        gpu_server = cluster.gpu_server if cluster is not None else None
        write_parquet(work / "gpu_load.parquet", gpu_load_frame(stats, gpu_server))
        layer_load = layer_load.merge(summarize_gpu_load(stats), on="layer")
    write_parquet(work / "layer_load.parquet", layer_load)
    if pairs:
        write_parquet(work / "coactivation.parquet", coactivation_frame(stats))
        write_parquet(work / "transitions.parquet", transition_frame(stats))
    fig = plots.plot_expert_load_heatmap(
        activation_probability(stats.counts, model), model.moe_layer_indices
    )
    save_figure(work / "expert_load.png", fig)
    plt.close(fig)
    return layer_load


def _host_function(
    expert_gpus: np.ndarray, cluster: ClusterSpec | None, num_gpus: int, where: Path
) -> Callable[[RoutingTrace], np.ndarray]:
    """Host GPU of every route: the only replica, or the one nearest the token's origin."""
    import numpy as np

    from simulator.cluster.paths import build_route_table
    from simulator.traffic import resolve_hosts
    from traces.origins import resolve_origins

    if expert_gpus.shape[2] == 1:
        primary = expert_gpus[:, :, 0]
        layers = np.arange(primary.shape[0])[None, :, None]
        return lambda b: primary[layers, b.experts.astype(np.int64)]
    if cluster is None:
        raise InputError(
            f"{where}: the layout has replicas; pass --topology so each route goes to the"
            " replica nearest its origin"
        )
    distance = build_route_table(cluster).gpu_distance

    def hosts(b: RoutingTrace) -> np.ndarray:
        return resolve_hosts(b.experts, resolve_origins(b, num_gpus), expert_gpus, distance)

    return hosts
