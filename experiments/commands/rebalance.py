"""``moe-netsim rebalance``: replay a trace while a policy re-places experts over time."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

from experiments.commands.cluster_args import (
    add_cluster_arguments,
    cluster_from_args,
    cluster_label,
)
from experiments.options import add_number, add_option
from experiments.outputs import (
    add_output_argument,
    run_directory,
    run_directory_kind,
    save_figure,
    write_json,
    write_parquet,
)
from placement.options import SolverOptions
from traces.infra.errors import InputError
from traces.infra.options import Range


def _help(name: str) -> str:
    from experiments.rebalance_config import RebalanceConfig

    return next(f.metadata["help"] for f in fields(RebalanceConfig) if f.name == name)


def register(sub: argparse._SubParsersAction) -> None:
    from experiments.rebalance_config import MIGRATION_MODES, MODES, POLICIES, RebalanceConfig

    d = RebalanceConfig()
    p = sub.add_parser(
        "rebalance",
        help="Replay a trace while a policy re-places experts; migration traffic counted.",
        description=(
            "Time is the trace's step column. The first --window steps fit the first layout;"
            " then every --interval steps the policy decides (static: never; periodic: re-fit"
            " on the last --window steps; threshold: switch when the layout in force costs"
            " --threshold more than a fresh one). --move-weight prices weight bytes moved"
            " (exact for ilp, ilp-load, ilp-origin), --move-budget caps them per rebalance."
            " Writes timeline.parquet (one row per window), migration_links.parquet,"
            " layouts/step_<S>.parquet, summary.json and timeline.png."
        ),
    )
    p.add_argument("--trace", type=Path, required=True, help="Trace file with steps (Parquet).")
    add_cluster_arguments(p, required=True, help_file="Cluster file (.json or .graphml).")
    p.add_argument("--strategy", default=d.strategy,
                   help=_help("strategy") + " (default: %(default)s)")
    p.add_argument("--policy", choices=POLICIES, default=d.policy, help=_help("policy"))
    add_number(p, "--interval", int, d.interval_steps, _help("interval_steps"), "steps",
               Range(1, 2**31 - 1))
    add_number(p, "--window", int, d.window_steps, _help("window_steps"), "steps",
               Range(1, 2**31 - 1))
    add_number(p, "--threshold", float, d.threshold, _help("threshold"), "",
               Range(0, 10, high_open=True))
    add_number(p, "--move-weight", float, None, _help("move_weight"), "", Range(0, 1e12))
    add_number(p, "--move-budget", float, None, _help("move_budget_bytes"), "bytes",
               Range(0, 2**63))
    add_number(p, "--weight-bytes-per-param", float, d.weight_bytes_per_param,
               _help("weight_bytes_per_param"), "bytes", Range(0, 64, low_open=True))
    p.add_argument("--migration", choices=MIGRATION_MODES, default=d.migration,
                   help=_help("migration"))
    p.add_argument("--mode", choices=MODES, default=d.mode, help=_help("mode"))
    p.add_argument("--no-dedup", action="store_true",
                   help="Report network bytes with one copy per route (default: de-duplicated).")
    add_option(p, SolverOptions, "time_limit_s", "--time-limit", default=60.0,
               help="Solver time limit per fit.")
    add_output_argument(p, "--out", run_directory_kind("rebalance"), required=True,
                        help="Run directory to create.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a run directory an earlier `rebalance` wrote.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from experiments.rebalance import run_rebalance
    from experiments.rebalance_config import RebalanceConfig
    from experiments.versions import versions
    from placement.layout_io import save_layout
    from simulator.cluster.paths import build_route_table
    from traces.io import read_trace_meta

    if not args.trace.exists():
        raise InputError(f"--trace {args.trace}: file not found")
    config = RebalanceConfig(
        strategy=args.strategy, policy=args.policy, interval_steps=args.interval,
        window_steps=args.window, threshold=args.threshold, move_weight=args.move_weight,
        move_budget_bytes=args.move_budget, weight_bytes_per_param=args.weight_bytes_per_param,
        migration=args.migration, server_dedup=not args.no_dedup, mode=args.mode,
    )
    from placement.strategies import STRATEGIES

    if config.strategy not in STRATEGIES:
        raise InputError(f"--strategy {config.strategy!r}: known: {', '.join(sorted(STRATEGIES))}")
    model = read_trace_meta(args.trace)[0].model
    cluster = cluster_from_args(args)
    assert cluster is not None  # the argument group is required
    routes = build_route_table(cluster)
    t0 = time.perf_counter()
    options = SolverOptions(time_limit_s=args.time_limit)
    res = run_rebalance(args.trace, routes, config, options)
    if config.policy != "static":  # the counterfactual: the first layout kept throughout
        static = run_rebalance(args.trace, routes, replace(
            config, policy="static", move_weight=None, move_budget_bytes=None, mode="analytic"),
            options)
        res.timeline["network_bytes_static"] = static.timeline["network_bytes"].to_numpy()
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
    print(f"wrote        {args.out}")
    return 0


def summarize(t):  # noqa: ANN001, ANN201 - DataFrame -> dict
    """Totals over the replayed windows (token-weighted means for per-token metrics)."""
    w = t["tokens"] / t["tokens"].sum()
    out = {
        "tokens": float(t["tokens"].sum()),
        "rebalances": int((t["decision"] == "rebalance").sum()),
        "network_bytes": float(t["network_bytes"].sum()),
        "network_bytes_dedup": float(t["network_bytes_dedup"].sum()),
        "network_bytes_no_dedup": float(t["network_bytes_no_dedup"].sum()),
        "remote_copies_per_token_layer": float((w * t["remote_copies_per_token_layer"]).sum()),
        "hops_per_token": float((w * t["hops_per_token"]).sum()),
        "gpu_load_max_over_mean": float(t["gpu_load_max_over_mean"].max()),
        "bytes_migrated": float(t["bytes_migrated"].sum()),
        "stall_s": float(t["stall_s"].sum()),
    }
    if "latency_p99_s" in t:
        out["latency_p99_s_max"] = float(t["latency_p99_s"].max())
    if "network_bytes_static" in t:
        saved = (t["network_bytes_static"] - t["network_bytes"]).cumsum()
        moved = t["bytes_migrated"].cumsum()
        even = t["step_stop"][(saved >= moved) & (moved > 0)]
        out["network_bytes_saved_vs_static"] = float(saved.iloc[-1])
        out["break_even_step"] = int(even.iloc[0]) if len(even) else None
    return out


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
