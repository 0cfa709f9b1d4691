"""``moe-netsim rebalance``: replay a trace while a policy re-places experts over time."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.commands.cluster_args import (
    add_cluster_arguments,
    cluster_from_args,
    cluster_label,
)
from experiments.options import add_option
from experiments.outputs import (
    add_output_argument,
    run_directory,
    run_directory_kind,
    save_figure,
    write_json,
    write_parquet,
)
from experiments.progress import Feedback, add_progress_arguments
from placement.options import SolverOptions
from traces.infra.errors import InputError

if TYPE_CHECKING:
    from experiments.rebalance_config import RebalanceConfig
    from simulator.cluster.paths import RouteTable

# RebalanceConfig field -> its flag (the flags derive default, range and help from the field).
FLAGS = {
    "policy": "--policy", "interval_steps": "--interval", "window_steps": "--window",
    "threshold": "--threshold", "move_weight": "--move-weight",
    "move_budget_bytes": "--move-budget", "sample_tokens": "--sample-tokens",
    "weight_bytes_per_param": "--weight-bytes-per-param",
    "migration": "--migration", "mode": "--mode", "origins": "--origins",
}


def register(sub: argparse._SubParsersAction) -> None:
    from experiments.rebalance_config import RebalanceConfig
    from placement.strategies import MIGRATION_AWARE

    p = sub.add_parser(
        "rebalance",
        help="Replay a trace while a policy re-places experts; migration traffic counted.",
        description=(
            "Time is the trace's step column. The first --window steps fit the first layout;"
            " then every --interval steps the policy decides (static: never; periodic: re-fit"
            " on the last --window steps; threshold: switch when the layout in force costs"
            " --threshold more than a fresh one). --move-weight prices weight bytes moved,"
            " --move-budget caps them per rebalance (strategies"
            f" {', '.join(sorted(MIGRATION_AWARE))})."
            " Writes timeline.parquet (one row per window), migration_links.parquet,"
            " layouts/step_<S>.parquet, summary.json, timeline.png and report.html."
        ),
    )
    p.add_argument("--trace", type=Path, required=True, help="Trace file with steps (Parquet).")
    add_cluster_arguments(p, required=True, help_file="Cluster file (.json or .graphml).")
    add_option(p, RebalanceConfig, "strategy", "--strategy", more=" (default: %(default)s)")
    for name, flag in FLAGS.items():
        add_option(p, RebalanceConfig, name, flag)
    p.add_argument("--no-dedup", action="store_true",
                   help="Report network bytes with one copy per route (default: de-duplicated).")
    add_option(p, SolverOptions, "time_limit_s", "--time-limit", default=60.0,
               help="Solver time limit per fit.")
    add_output_argument(p, "--out", run_directory_kind("rebalance"), required=True,
                        help="Run directory to create.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a run directory an earlier `rebalance` wrote.")
    p.add_argument("--no-report", action="store_true", help="Skip report.html and its figures.")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def run(args: argparse.Namespace) -> int:
    from experiments.rebalance import check_strategy, rebalance_with_counterfactual, summarize
    from experiments.rebalance_config import RebalanceConfig
    from experiments.versions import versions
    from placement.layout_io import save_layout
    from simulator.cluster.paths import build_route_table
    from traces.infra.limits import (
        LAYOUT_ENTRY_MIN_BYTES,
        OUT_DISK_FIX,
        PARQUET_FILE_MIN_BYTES,
        check_disk,
    )
    from traces.io import read_trace_meta

    if not args.trace.exists():
        raise InputError(f"--trace {args.trace}: file not found")
    from traces.origin_models import resolve_model

    resolve_model(args.origins)  # bad text: the message names the flag
    config = RebalanceConfig(strategy=args.strategy, server_dedup=not args.no_dedup,
                             **{name: getattr(args, _dest(flag)) for name, flag in FLAGS.items()})
    check_strategy(config.strategy, "--strategy")
    meta, tokens = read_trace_meta(args.trace)
    model = meta.model
    cluster = cluster_from_args(args)
    assert cluster is not None  # the argument group is required
    routes = build_route_table(cluster)
    layout_bytes = model.num_moe_layers * model.num_routed_experts * LAYOUT_ENTRY_MIN_BYTES
    check_disk(3 * PARQUET_FILE_MIN_BYTES + layout_bytes, args.out, "rebalance", OUT_DISK_FIX)
    feedback = Feedback.from_args(args)
    line = _time_line(args.trace, routes, config, tokens, model.num_moe_layers)
    if line:
        feedback.note(f"{line}; plus one {config.strategy} fit per window that re-fits")
    t0 = time.perf_counter()
    options = SolverOptions(time_limit_s=args.time_limit)
    with feedback.bar(None, "rebalance", "window") as bar:
        def window_done(message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(1)

        res = rebalance_with_counterfactual(args.trace, routes, config, options, window_done)
    with run_directory(args.out, args.overwrite) as out:
        write_parquet(out / "timeline.parquet", res.timeline)
        write_parquet(out / "migration_links.parquet", res.migration_links)
        for step, layout in res.layouts.items():
            save_layout(layout, out / "layouts" / f"step_{step}.parquet",
                        routes.cluster.gpu_server, model.moe_layer_indices)
        summary = summarize(res.timeline)
        summary.update(config={f.name: getattr(config, f.name) for f in fields(config)},
                       runtime_s=time.perf_counter() - t0)
        write_json(out / "summary.json", summary)
        write_json(out / "meta.json", {
            "command": "moe-netsim rebalance", "trace": str(args.trace),
            "topology": cluster_label(args), "model": model.name, "versions": versions(),
            "status": "complete",
        })
        save_figure(out / "timeline.png", plot_timeline(res.timeline))
    if not args.no_report:  # once the run is in place: the page names its directory
        from experiments.report_rebalance import write_rebalance_report

        write_rebalance_report([args.out], args.out)
    if res.origins_warning:
        print(res.origins_warning, file=sys.stderr)
    t = res.timeline
    print(f"windows      {len(t)} ({int((t.decision == 'rebalance').sum())} rebalances)")
    print(f"network      {summary['network_bytes'] / 1e9:.3f} GB"
          f" ({'de-duplicated' if config.server_dedup else 'one copy per route'})")
    print(f"copies       {summary['remote_copies_per_token_layer']:.4f} remote per token per layer")
    print(f"hops         {summary['hops_per_token']:.1f} per token (the paper's metric)")
    print(f"migrated     {summary['bytes_migrated'] / 1e9:.3f} GB,"
          f" stall {summary['stall_s']:.3f} s")
    if "break_even_step" in summary:
        even = summary["break_even_step"]
        print(f"saved        {summary['network_bytes_saved_vs_static'] / 1e9:.3f} GB of network"
              " traffic vs keeping the first layout; "
              + (f"pays for the moves by step {even}" if even is not None
                 else "never pays for the moves in this trace"))
    tail = "" if args.no_report else f" (open {args.out}/report.html)"
    print(f"wrote        {args.out}{tail}")
    return 0


def plot_timeline(t):  # noqa: ANN001, ANN201 - DataFrame -> Figure
    """Traffic, imbalance and cumulative bytes (saved vs moved) over time, rebalances marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    x = t["step_start"]
    axes[0].plot(x, t["network_bytes"] / t["tokens"] / 1e3, marker=".")
    axes[0].set_ylabel("network KB / token")
    axes[1].plot(x, t["gpu_load_max_over_mean"], marker=".", color="tab:orange")
    axes[1].set_ylabel("GPU load max/mean")
    if "network_bytes_static" in t:
        saved = (t["network_bytes_static"] - t["network_bytes"]).cumsum()
        axes[2].plot(x, saved / 1e9, label="network bytes saved vs keeping the first layout")
    axes[2].plot(x, t["bytes_migrated"].cumsum() / 1e9, label="weight bytes moved")
    axes[2].set_ylabel("cumulative GB")
    axes[2].set_xlabel("step")
    axes[2].legend(loc="upper left", fontsize=8)
    for ax in axes:
        for s in x[t["decision"] == "rebalance"]:
            ax.axvline(s, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    fig.suptitle("rebalancing over time (dotted: rebalances)")
    return fig


def _time_line(trace: Path, routes: RouteTable, config: RebalanceConfig, tokens: int,
               moe_layers: int) -> str | None:
    """The CPU-time line of the replay: in DES mode from the first step's hop events
    (simulator/des_cost.py) scaled to the trace's tokens, else per token and layer."""
    from traces.infra import limits

    if config.mode != "des":
        return limits.run_time_line("rebalance", tokens, moe_layers, config.mode)
    from experiments.rebalance_window import sim_config
    from simulator.des_cost import trace_hop_events

    events = trace_hop_events(trace, routes, config.origins,
                              sim_config(config.server_dedup).traffic, tokens)
    return None if events is None else limits.des_time_line("rebalance", events)
