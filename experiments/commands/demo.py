"""``moe-netsim demo``: the whole pipeline on a DeepSeek-R1-like synthetic trace."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.progress import Feedback, add_progress_arguments

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class DemoConfig:
    fat_tree_k: int = 10
    num_servers: int = 32
    fit_tokens: int = 4096
    replay_tokens: int = 4096
    step_tokens: int = 2048
    zipf_exponent: float = 0.45  # busiest expert ~7x the layer mean, as in real DeepSeek-R1
    seed: int = 0
    strategies: tuple[str, ...] = ("round-robin", "ilp", "ilp-load", "ilp-origin")
    # workloads with their own expert popularity, each served on an equal contiguous block
    # of GPUs (two: the first and the second half)
    tenants: tuple[str, ...] = ("chat", "code")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="Place and replay a synthetic DeepSeek-R1 trace on a partially populated fat tree.",
        description=(
            "Generate a seeded DeepSeek-R1-like trace, build a fat tree of 32 servers x 8 GPUs,"
            " place experts with round-robin, the paper's ILP and ILPLoad (HiGHS), replay each"
            " placement in the SimPy model and write Parquet results, PNG figures and an HTML"
            " report."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="Run directory.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing directory.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the synthetic trace.")
    p.add_argument(
        "--tokens", type=int, default=4096, help="Tokens replayed (as many again are used to fit)."
    )
    add_progress_arguments(p)
    p.set_defaults(func=run)


def _progress(t0: float, feedback: Feedback) -> Callable[[str], None]:
    def say(msg: str) -> None:
        feedback.note(f"[{time.perf_counter() - t0:6.1f}s] {msg}")

    return say


def run(args: argparse.Namespace) -> int:
    from experiments.outputs import run_directory

    cfg = DemoConfig(seed=args.seed, fit_tokens=args.tokens, replay_tokens=args.tokens)
    if cfg.replay_tokens < 1:
        from traces.infra.errors import InputError

        raise InputError("--tokens must be >= 1")
    if cfg.seed < 0:
        from traces.infra.errors import InputError

        raise InputError(f"--seed must be >= 0, got {cfg.seed}")
    feedback = Feedback.from_args(args)
    say = _progress(time.perf_counter(), feedback)
    with run_directory(args.out, args.overwrite) as work:
        summary = run_demo(cfg, work, say, feedback)
    print(summary.to_string(index=False))
    print(f"\nwrote {args.out}/ (open {args.out}/report.html)")
    return 0


def run_demo(
    cfg: DemoConfig, out: Path, say: Callable[[str], None], feedback: Feedback | None = None
) -> pd.DataFrame:
    from experiments.pipeline import build_problem, compare, origin_activation, place_and_replay
    from placement import SolverOptions
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig
    from traces import SynthConfig, model_preset
    from traces.io import write_trace
    from traces.synthetic import TenantSpec, generate_trace

    model = model_preset("deepseek-r1")
    say(f"building a k={cfg.fat_tree_k} fat tree with {cfg.num_servers} servers x 8 GPUs")
    cluster = build_fat_tree(cfg.fat_tree_k, cfg.num_servers)
    routes = build_route_table(cluster)
    g = cluster.num_gpus
    say(
        f"generating a synthetic {model.name} trace: {cfg.fit_tokens} tokens to fit,"
        f" {cfg.replay_tokens} to replay, {model.num_moe_layers} MoE layers, top-{model.top_k}"
    )
    trace = generate_trace(
        SynthConfig(
            model,
            num_tokens=cfg.fit_tokens + cfg.replay_tokens,
            seq_len=8,
            step_tokens=cfg.step_tokens,
            num_gpus=g,
            zipf_exponent=cfg.zipf_exponent,
            seed=cfg.seed,
            tenants=tuple(TenantSpec(share=1.0, name=name) for name in cfg.tenants),
        )
    )
    fit = trace.take(slice(0, cfg.fit_tokens))
    replay = trace.take(slice(cfg.fit_tokens, None))
    write_trace(out / "trace_replay.parquet", replay)
    p, per_origin, _ = origin_activation([fit], g)
    sim_config = SimConfig()
    problem = build_problem(routes, model, p, origin_activation=per_origin,
                            traffic=sim_config.traffic)
    options = SolverOptions(time_limit_s=120, threads=1, seed=cfg.seed)
    evals = []
    steps = (feedback or Feedback()).iterate(cfg.strategies, len(cfg.strategies),
                                             "demo: place and replay", "placer")
    for strategy in steps:
        evals.append(place_and_replay(problem, strategy, replay, routes, sim_config, options, say))
    say("writing results, figures and report")
    summary = compare(evals)
    _write_outputs(cfg, out, cluster, problem, evals, summary, p)
    return summary[
        ["strategy", "status", "gap", "solve_time_s", "hops_per_token", "network_link_bytes",
         "max_link_utilisation", "latency_p50_ms", "latency_p99_ms"]
        + [c for c in summary.columns if c == "hops_per_token_reduction_pct"]
    ]


def _write_outputs(cfg, out, cluster, problem, evals, summary, activation) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from experiments import plots
    from experiments.outputs import atomic_write_text, save_figure, write_json, write_parquet
    from experiments.versions import versions
    from placement.ilp import server_cost

    model_layers = problem.layer_indices
    write_parquet(out / "summary.parquet", summary)
    links = pd.concat(
        [e.sim.links.assign(strategy=e.placement.strategy) for e in evals], ignore_index=True
    )
    layers = pd.concat(
        [e.sim.layers.assign(strategy=e.placement.strategy) for e in evals], ignore_index=True
    )
    tokens = pd.concat(
        [e.sim.tokens.assign(strategy=e.placement.strategy) for e in evals], ignore_index=True
    )
    layouts = pd.concat(
        [
            e.layout.to_frame(cluster.gpu_server, model_layers).assign(
                strategy=e.placement.strategy
            )
            for e in evals
        ],
        ignore_index=True,
    )
    write_parquet(out / "links.parquet", links)
    write_parquet(out / "layers.parquet", layers)
    write_parquet(out / "tokens.parquet", tokens)
    write_parquet(out / "layouts.parquet", layouts)
    cost = server_cost(problem)
    rows = []
    for e in evals:
        prim = e.layout.primary
        server_of = cluster.gpu_server[prim]
        load = np.bincount(server_of.ravel(), weights=activation.ravel(), minlength=len(cost))
        for s in range(len(cost)):
            rows.append((e.placement.strategy, s, cost[s], load[s] / len(model_layers)))
    server_load = pd.DataFrame(rows, columns=["strategy", "server", "cost", "load"])
    write_parquet(out / "server_load.parquet", server_load)
    figs = {
        "summary.png": plots.plot_summary_bars(summary),
        "link_bytes.png": plots.plot_link_bytes(links),
        "latency_cdf.png": plots.plot_latency_cdfs(
            tokens.rename(columns={"strategy": "placer"}), "Per-token MoE latency (simulated)"
        ),
        "server_load.png": plots.plot_server_load(server_load),
        "expert_load.png": plots.plot_expert_load_heatmap(activation, model_layers),
    }
    for name, fig in figs.items():
        save_figure(out / name, fig)
        plt.close(fig)
    write_json(
        out / "meta.json",
        {
            "command": "moe-netsim demo",
            "config": asdict(cfg),
            "cluster": cluster.description,
            "sim_config": evals[0].sim.config.to_dict(),
            "solver_options": asdict(evals[0].placement.options),
            "versions": versions(),
            "status": "complete",
        },
    )
    atomic_write_text(out / "report.html", _report(cfg, cluster, summary, server_load))


def _change(reduction_pct: float, better: str, worse: str) -> str:
    """'2.2% fewer' for a reduction, '0.2% more' for an increase."""
    word = better if reduction_pct >= 0 else worse
    return f"{abs(reduction_pct):.1f}% {word}"


def _report(cfg, cluster, summary: pd.DataFrame, server_load: pd.DataFrame) -> str:  # type: ignore[no-untyped-def]
    from experiments.report import Section, render_report

    s = summary.set_index("strategy")
    rr = s.loc["round-robin"]
    costs = server_load[server_load["strategy"] == "round-robin"]["cost"]
    lines = []
    for name in s.index:
        if name == "round-robin":
            continue
        row = s.loc[name]
        lines.append(
            f"<b>{name}</b>: {row['hops_per_token']:,.0f} hops per token"
            f" ({_change(row['hops_per_token_reduction_pct'], 'fewer', 'more')} than"
            f" round-robin), {row['network_link_bytes'] / 1e9:,.1f} GB on network links"
            f" ({_change(row['network_link_bytes_reduction_pct'], 'less', 'more')}),"
            f" {row['network_bytes'] / 1e9:,.2f} GB leaving servers, p99 MoE latency"
            f" {row['latency_p99_ms']:.2f} ms"
            f" ({_change(row['latency_p99_ms_reduction_pct'], 'lower', 'higher')})."
        )
    why = [
        f"The cluster is a k={cfg.fat_tree_k} fat tree only partly populated:"
        f" {cluster.description}."
        " Servers in the full pod reach most other servers without crossing the core, servers in"
        " the small pod do not, so the expected round-trip distance c[s] from a token's origin"
        f" ranges from {costs.min():.2f} to {costs.max():.2f} hops across servers. This asymmetry"
        " is what lets a topology-aware placement win at all: on a fully populated fat tree every"
        " server would see the same distances, c[s] would be equal, and every layout would have"
        " the same expected hops (design.md section 5).",
        "Expert load is skewed (see the heatmap; the busiest expert of a layer carries about 7x"
        f" the mean, as in real DeepSeek-R1 statistics). {len(cfg.tenants)} workloads share the"
        " cluster, each"
        f" with its own expert popularity and served on its own block of"
        f" {cluster.num_gpus // len(cfg.tenants)} consecutive GPUs ({', '.join(cfg.tenants)}),"
        " so token origins are spread evenly over all GPUs but which experts a token wants"
        " depends on where it lives. Every"
        f" placer fits on the first {cfg.fit_tokens} tokens; the replay uses the next"
        f" {cfg.replay_tokens}, so the gains are out-of-sample.",
        "The load-aware ILP (ilp-load, the paper's ILPLoad) puts the hottest experts of every"
        " layer on the servers with the smallest c[s]: the centre of the big pod.",
        "ilp-origin (this project's) measures activation per origin GPU and minimises the"
        " expected distance from each token's own GPU, so a workload's favourite experts move"
        " towards the GPUs that serve it. This is the origin-dependent expert use that design.md"
        " section 5 names as the second source of gains, and the only one of the four that also"
        " reduces the bytes that leave servers.",
        "The paper's uniform ILP treats every expert as equally likely. With one expert of each"
        " layer per GPU the caps are tight, every server holds the same number of experts, and"
        " with equal weights every such layout has the same objective: it can only tie"
        " round-robin, and any difference in the replay is chance.",
        "Per-link bytes and hops fall with ilp-load because hot traffic stays inside the big pod,"
        " but the bytes leaving servers barely change: a placement that ignores origins cannot"
        " change the chance that a route leaves its server. Latency depends on the most loaded"
        " links and GPUs: concentrating hot experts also concentrates load (see max link"
        " utilisation), which the latency rows show honestly; the compute-balance option of the"
        " ILP family (`moe-netsim place --balance-eps`) addresses that.",
    ]
    sections = [
        Section("Result", lines, table=summary),
        Section("Why the numbers differ", why),
        Section(
            "Figures",
            figures=[
                ("summary.png", "Hops per token and link bytes by tier, per placement."),
                ("server_load.png", "Expected routed tokens per server vs. the server's cost."),
                ("link_bytes.png", "Network link directions ranked by bytes."),
                ("latency_cdf.png", "Per-token MoE latency over all layers (SimPy replay)."),
                ("expert_load.png", "Expert activation per layer (fit trace)."),
            ],
        ),
        Section(
            "Model",
            [
                "Dispatch sends hidden x 1 byte (FP8) per route from the token's origin GPU to the"
                " expert's GPU, combine sends hidden x 2 bytes (BF16) back; shared experts are"
                " replicated on every GPU and cause no traffic. Links are full duplex FIFO"
                " servers with bandwidth and latency; messages are aggregated per (source,"
                " destination) GPU pair and phase and cut into 1 MiB chunks; ECMP by per-hop"
                " hashing. Per-link bytes of the SimPy replay equal the independent analytic"
                " count exactly (checked in this run).",
                f"Rounded reference: round-robin hops per token {rr['hops_per_token']:,.1f}.",
            ],
        ),
    ]
    return render_report("moe-netsim demo: round-robin vs. topology-aware ILP", sections)
