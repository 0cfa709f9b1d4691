"""``moe-netsim demo``: the whole pipeline on a DeepSeek-R1-like synthetic trace."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.options import SEED_RANGE, add_number
from experiments.outputs import add_output_argument, run_directory_kind
from experiments.progress import Feedback, add_progress_arguments
from traces.infra.options import Range

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
    strategies: tuple[str, ...] = (
        "round-robin", "ilp", "ilp-load", "ilp-origin", "eplb", "dedup",
    )
    dispatch: str = "deepep-normal"  # DeepEP-style: one copy per token and remote server
    # workloads with their own expert popularity, each served on an equal contiguous block
    # of GPUs (two: the first and the second half)
    tenants: tuple[str, ...] = ("chat", "code")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="Place and replay a synthetic DeepSeek-R1 trace on a partially populated fat tree.",
        description=(
            "Generate a seeded DeepSeek-R1-like trace, build a fat tree of 32 servers x 8 GPUs,"
            " place experts with round-robin, the paper's ILP and ILPLoad (HiGHS), ilp-origin,"
            " EPLB and dedup, replay each placement in the SimPy model with de-duplicated"
            " dispatch and write Parquet results, PNG figures and an HTML report."
        ),
    )
    add_output_argument(p, "--out", run_directory_kind("demo"), default=Path("runs/demo"),
                        help="Run directory.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a run directory an earlier `demo` wrote.")
    add_number(p, "--seed", int, 0, "Seed of the synthetic trace.", "", SEED_RANGE)
    add_number(p, "--tokens", int, 4096, "Tokens replayed (as many again are used to fit).",
               "tokens", Range(1, 2**20))
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
    from experiments.pipeline import (
        Evaluation,
        build_problem,
        compare,
        origin_activation,
        place_and_replay,
    )
    from placement import SolverOptions
    from placement.token_sample import token_sample
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig
    from simulator.traffic_config import TrafficConfig
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
    sample = token_sample([fit], g)
    sim_config = SimConfig(traffic=TrafficConfig(dispatch=cfg.dispatch))
    problem = build_problem(routes, model, p, origin_activation=per_origin,
                            traffic=sim_config.traffic, sample=sample)
    options = SolverOptions(time_limit_s=120, threads=1, seed=cfg.seed)
    # EPLB needs (experts + redundant) to divide over the GPUs: the fewest redundant copies
    eplb_problem = build_problem(routes, model, p, origin_activation=per_origin,
                                 traffic=sim_config.traffic, sample=sample,
                                 num_redundant=(-model.num_routed_experts) % g)
    evals: list[Evaluation] = []
    steps = (feedback or Feedback()).iterate(cfg.strategies, len(cfg.strategies),
                                             "demo: place and replay", "strategy")
    for strategy in steps:
        prob = eplb_problem if strategy == "eplb" else problem
        evals.append(place_and_replay(prob, strategy, replay, routes, sim_config, options, say))
    say("writing results, figures and report")
    summary = compare(evals)
    _write_outputs(cfg, out, cluster, problem, evals, summary, p)
    return summary[
        ["strategy", "status", "gap", "solve_time_s", "hops_per_token",
         "remote_copies_per_token_layer", "remote_routes_per_token_layer",
         "network_bytes_dedup", "network_bytes_no_dedup",
         "max_link_utilisation", "latency_p50_ms", "latency_p99_ms"]
        + [c for c in summary.columns if c == "hops_per_token_reduction_pct"]
    ]


def _write_outputs(cfg, out, cluster, problem, evals, summary, activation) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    from experiments.outputs import write_json, write_parquet
    from experiments.report_runs import write_demo_report
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
    L, E = activation.shape
    write_parquet(out / "expert_load.parquet", pd.DataFrame({
        "layer": np.repeat(np.asarray(model_layers, dtype=np.int64), E),
        "expert": np.tile(np.arange(E, dtype=np.int64), L),
        "activation": activation.ravel(),
    }))
    write_json(
        out / "meta.json",
        {
            "command": "moe-netsim demo",
            "config": asdict(cfg),
            "cluster": cluster.description,
            "num_gpus": cluster.num_gpus,
            "sim_config": evals[0].sim.config.to_dict(),
            "solver_options": asdict(evals[0].placement.options),
            "versions": versions(),
            "status": "complete",
        },
    )
    write_demo_report(out)
