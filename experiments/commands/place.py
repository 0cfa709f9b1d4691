"""``moe-netsim place``: place experts on a cluster from load statistics, write the layout.

The cluster (a JSON file or a built fat tree) becomes numbers here: the GPU distance matrix,
server membership, per-server-pair seconds per byte and link incidence (from the simulator's
ECMP route table); the statistics (SGLang ``logical_count`` JSON or a native trace) become
p[l, i] and, from a trace, activation per origin GPU.  ``placement`` sees only those numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.commands.cluster_args import add_cluster_arguments, cluster_from_args
from experiments.commands.place_failures import (
    DEFAULT_STRATEGY,
    add_failure_arguments,
    check_failure_arguments,
    repair_input,
    repair_result,
    robust_problem,
)
from experiments.options import add_number, add_option
from experiments.outputs import LAYOUT_TABLE, SGLANG_MAP, TRTLLM_YAML, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from placement import STRATEGIES
from placement.options import SolverOptions
from traces.infra.errors import InputError
from traces.infra.options import Range
from traces.origin_models import OriginOptions, resolve_model

if TYPE_CHECKING:
    import numpy as np

    from placement.dedup.evaluate import DedupCost
    from placement.problem import PlacementProblem, PlacementResult
    from placement.token_sample import TokenSample
    from simulator.cluster.paths import RouteTable
    from simulator.cluster.topology import ClusterSpec
    from traces.model import ModelSpec
    from traces.origin_models import OriginModel
    from traces.origins import OriginAssigner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "place",
        help="Place experts on a cluster (ILPs, EPLB, baselines) and write the layout.",
        description=(
            "Read a cluster and expert load statistics, place every expert with the named"
            " strategy and write the layout as a tidy table (layer, expert, replica, gpu,"
            " server), optionally also as SGLang --init-expert-location JSON."
        ),
    )
    add_cluster_arguments(p, required=True, help_file="Cluster file (.json or .graphml).")
    p.add_argument("--fit", "--stats", dest="stats", type=Path, required=True,
                   help="What to fit the placement to: SGLang logical_count .json, the .parquet"
                        " of `trace import --format sglang`, or a native trace .parquet"
                        " (--stats is the older name of the same flag).")
    p.add_argument("--model", default=None,
                   help="Model preset (default: the file's model; an SGLang JSON by its"
                        " geometry, 61 x 256 = deepseek-r1).")
    p.add_argument("--strategy", default=None, choices=sorted(STRATEGIES),
                   help=f"Placement strategy (default {DEFAULT_STRATEGY}).")
    add_option(p, OriginOptions, "origins", "--origins")
    add_number(p, "--replicas", int, 0, "Redundant expert copies per MoE layer (ILP family and"
               " eplb).", "copies", Range(0, 2**20))
    add_number(p, "--balance-eps", float, None, "Every GPU's expected token load at most"
               " (1 + eps) x the mean.", "", Range(0, 1e6))
    add_number(p, "--slots-per-gpu", int, None, "Expert slots per GPU over all layers (default:"
               " fewest that fit).", "slots", Range(1, 2**20))
    add_number(p, "--per-layer-per-gpu", int, None, "Experts of one layer per GPU (default:"
               " fewest that fit).", "experts", Range(1, 2**20))
    add_failure_arguments(p)
    add_option(p, SolverOptions, "time_limit_s", "--time-limit")
    add_option(p, SolverOptions, "mip_rel_gap", "--gap")
    add_option(p, SolverOptions, "threads", "--threads")
    add_option(p, SolverOptions, "seed", "--seed")
    add_option(p, SolverOptions, "flatten_popularity", "--flatten-popularity")
    add_output_argument(p, "--out", LAYOUT_TABLE, required=True,
                        help="Layout table (.parquet or .csv); its .meta.json is written beside.")
    add_output_argument(p, "--sglang-json", SGLANG_MAP, default=None,
                        help="Also write SGLang --init-expert-location JSON here.")
    add_output_argument(p, "--trtllm-yaml", TRTLLM_YAML, default=None,
                        help="Also write a TensorRT-LLM moe_load_balancer.yaml (static) here.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace output files that earlier `place` runs wrote.")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from placement import check_layout
    from placement.outcome import SolveStatus
    from simulator.cluster.paths import build_route_table
    from traces.origins import OriginAssigner

    if args.out.suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {args.out}: use a .parquet or .csv file name")
    args.strategy = check_failure_arguments(args)
    options = SolverOptions(
        time_limit_s=args.time_limit, mip_rel_gap=args.gap, threads=args.threads, seed=args.seed,
        flatten_popularity=args.flatten_popularity,
    )
    origins = resolve_model(args.origins)
    cluster = cluster_from_args(args)
    assert cluster is not None  # the argument group is required
    routes = build_route_table(cluster)
    assigner = OriginAssigner(origins, cluster.gpu_server)
    if args.replicas < 0:
        raise InputError(f"--replicas {args.replicas}: give 0 or more redundant copies per layer")
    fit = _fit_input(args, origins, cluster, assigner)
    problem, res = _solve(args, fit, routes, cluster, options)
    print(f"strategy     {res.strategy}")
    print(f"status       {res.status.value}")
    if res.status is SolveStatus.INFEASIBLE:
        raise InputError(f"placement {args.strategy} is infeasible: {res.message}")
    if res.status is SolveStatus.NO_SOLUTION:  # stopped by --time-limit: the user's to raise
        raise InputError(f"--time-limit {args.time_limit:g}: placement {args.strategy}"
                         f" {res.status.value}: {res.message}")
    if not res.is_ok or res.layout is None:  # the solver failed on a valid problem: a bug
        raise RuntimeError(f"placement {args.strategy} {res.status.value}: {res.message}")
    violations = check_layout(problem, res.layout)
    if violations:
        raise RuntimeError(f"placement {args.strategy} produced an invalid layout: {violations}")
    copies = _print_result(problem, res, fit.sample is not None)
    _write_outputs(args, res, cluster, fit.model, origins, options, copies)
    # after every input check, the solve and the writes (an error comes alone); statistics
    # have no origins
    warning = assigner.warning() if args.stats.suffix == ".parquet" else None
    if warning:
        print(warning, file=sys.stderr)
    return 0


@dataclass(frozen=True, eq=False)
class _FitInput:
    """What ``--fit`` gives: the model, p[l, i], activation per origin GPU (a trace only) and
    the per-token sample of the strategies fitted on tokens (a trace only)."""

    model: ModelSpec
    activation: np.ndarray
    origin_activation: np.ndarray | None
    sample: TokenSample | None


def _fit_input(args: argparse.Namespace, origins: OriginModel | None, cluster: ClusterSpec,
               assigner: OriginAssigner) -> _FitInput:
    """Read ``--fit``: a trace (activation, origins and a token sample) or load statistics
    (counts only: refused for the strategies and options that need more)."""
    from experiments.pipeline import trace_activation, trace_sample
    from placement import SAMPLE_STRATEGIES
    from traces import model_preset
    from traces.load_stats import load_load_stats, load_stats_kind
    from traces.origins import OriginAssigner

    if load_stats_kind(args.stats) == "trace":
        model, activation, origin_activation, _ = trace_activation(args.stats, assigner)
        if args.model is not None and args.model != model.name:
            raise InputError(
                f"{args.stats}: the trace is of model {model.name!r}, not {args.model!r}"
            )
        # a fresh assigner: the sample's origins are the same tokens' origins as above
        sample = trace_sample(args.stats, OriginAssigner(origins, cluster.gpu_server))
        return _FitInput(model, activation, origin_activation, sample)
    given = None if args.model is None else model_preset(args.model)
    stats = load_load_stats(args.stats, given)
    if origins is not None:
        raise InputError(
            f"--origins: {args.stats} holds load statistics, no tokens to give origins to"
            " (give a trace .parquet)"
        )
    if args.strategy in SAMPLE_STRATEGIES:
        raise InputError(
            f"--fit {args.stats}: {args.strategy} is fitted on per-token routing (which"
            " experts a token uses together, and where it starts); load statistics"
            " carry only counts per expert: give a native trace .parquet"
        )
    if args.strategy == "ilp-origin":
        raise InputError(
            f"{args.stats}: ilp-origin needs activation per origin GPU, which load"
            " statistics do not hold (give a trace .parquet)"
        )
    return _FitInput(stats.model, stats.activation(), None, None)


def _solve(args: argparse.Namespace, fit: _FitInput, routes: RouteTable, cluster: ClusterSpec,
           options: SolverOptions) -> tuple[PlacementProblem, PlacementResult]:
    """The placement problem (repaired or robust when asked) and the strategy's result."""
    from experiments.pipeline import build_problem
    from placement import solve_placement
    from placement.strategies import TIME_LIMITED
    from traces.infra.limits import ilp_size_line

    if args.repair is not None:  # the layout's copies decide the slots
        healthy, old_layout, args.replicas = repair_input(args, fit.model)
    try:
        problem = build_problem(
            routes, fit.model, fit.activation, fit.origin_activation, args.replicas,
            args.balance_eps, args.slots_per_gpu, args.per_layer_per_gpu, sample=fit.sample,
        )
    except InputError as exc:
        flags = f" (--replicas {args.replicas})" if args.replicas else ""
        raise InputError(f"{exc}{flags}") from None
    if args.robust is not None:
        problem, robust_note = robust_problem(problem, cluster, routes, args.robust)
        print(f"robust       {robust_note}")
    feedback = Feedback.from_args(args)
    if args.repair is not None:
        return problem, repair_result(args, problem, cluster, healthy, old_layout, fit.model,
                                      options)
    if args.strategy in TIME_LIMITED:
        solver = "HiGHS" if args.strategy.startswith("ilp") else "local search"
        desc = f"place {args.strategy} ({solver}, time limit {args.time_limit:g} s per solve)"
        size = ilp_size_line(f"place --strategy {args.strategy}", fit.model.num_moe_layers,
                             fit.model.num_routed_experts, cluster.num_gpus, args.time_limit)
        if size and args.strategy.startswith("ilp"):
            feedback.note(size)
        with feedback.ticking(None, desc):
            return problem, solve_placement(problem, args.strategy, options)
    return problem, solve_placement(problem, args.strategy, options)


def _print_result(problem: PlacementProblem, res: PlacementResult, sampled: bool
                  ) -> DedupCost | None:
    """The layout's costs and the solver's report; the de-duplicated copies (a trace's
    sample only) are returned for the meta file."""
    from placement.bottleneck import max_link_busy
    from placement.dedup.evaluate import dedup_cost
    from placement.problem import expected_cost

    assert res.layout is not None
    print(f"objective    {res.objective:.4f} expected hops per token (dispatch + combine, one"
          " copy per route: the paper's metric)")
    copies = None
    if sampled:
        copies = dedup_cost(problem, res.layout)
        per_copy = (problem.dispatch_bytes + problem.combine_bytes) * problem.num_layers
        print(f"remote       {copies.copies_per_token_layer:.4f} copies per token per MoE layer"
              f" de-duplicated, {copies.routes_per_token_layer:.4f} without (fitting trace)")
        print(f"network      {copies.copies_per_token_layer * per_copy:,.0f} bytes per token"
              f" de-duplicated, {copies.routes_per_token_layer * per_copy:,.0f} without")
    print(f"wire time    {expected_cost(problem, res.layout, 'wire') * 1e6:.3f} us per token")
    if res.layout.expert_gpus.shape[2] == 1:
        print(f"bottleneck   {max_link_busy(problem, res.layout) * 1e9:.3f} ns per token"
              " on the busiest network link")
    if res.solver is None:
        print("solver       none (a constructive baseline: no bound, no gap)")
    else:
        print(f"solver       {res.solver.describe()}")
    print(f"time         {res.runtime_s:.3f} s")
    if res.message:
        print(f"message      {res.message}")
    return copies


def _write_outputs(args: argparse.Namespace, res: PlacementResult, cluster: ClusterSpec,
                   model: ModelSpec, origins: OriginModel | None, options: SolverOptions,
                   copies: DedupCost | None) -> None:
    """The layout table, its .meta.json and the engine files asked for."""
    from traces.infra.atomic import all_or_none

    with all_or_none():  # an engine file that cannot be written leaves no layout behind
        _write_files(args, res, cluster, model, origins, options, copies)
    for path in (args.out, args.sglang_json, args.trtllm_yaml):
        if path is not None:
            print(f"wrote        {path}")


def _write_files(args: argparse.Namespace, res: PlacementResult, cluster: ClusterSpec,
                 model: ModelSpec, origins: OriginModel | None, options: SolverOptions,
                 copies: DedupCost | None) -> None:
    from experiments.layout_record import layout_record
    from experiments.outputs import atomic_write_text, write_json
    from placement.layout_io import save_layout, to_sglang_map

    assert res.layout is not None
    save_layout(res.layout, args.out, cluster.gpu_server, model.moe_layer_indices)
    meta = {
        "command": "moe-netsim place",
        **layout_record(cluster),  # the cluster it was made for: replays elsewhere warn
        "model": model.name,
        "stats": str(args.stats),
        "strategy": res.strategy,
        "origins": origins.text if origins is not None else "recorded, else dp",
        "status": res.status.value,
        "objective_expected_hops_per_token": res.objective,
        "remote_copies_per_token_layer": None if copies is None else copies.copies_per_token_layer,
        "remote_routes_per_token_layer": None if copies is None else copies.routes_per_token_layer,
        "solver": None if res.solver is None else res.solver.as_dict(),
        "runtime_s": res.runtime_s,
        "message": res.message,
        "solver_options": asdict(options),
        "replicas": args.replicas,
        "balance_eps": args.balance_eps,
        "robust": args.robust,
        "info": res.info,
    }
    write_json(args.out.with_name(args.out.name + ".meta.json"), meta)
    if args.sglang_json is not None:
        obj = to_sglang_map(res.layout, model.moe_layer_indices)
        atomic_write_text(args.sglang_json, json.dumps(obj) + "\n")
    if args.trtllm_yaml is not None:
        import yaml

        from placement.engine_layouts import to_trtllm_yaml

        obj = to_trtllm_yaml(res.layout, model.moe_layer_indices)
        atomic_write_text(args.trtllm_yaml, yaml.safe_dump(obj, default_flow_style=None))
