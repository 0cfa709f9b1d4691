"""``place --repair`` and ``place --robust``: placement after and for failures."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.cluster.failures import ELEMENT_KINDS
from traces.infra.errors import InputError

if TYPE_CHECKING:
    from placement import PlacementProblem, PlacementResult, SolverOptions
    from simulator.cluster.paths import RouteTable
    from simulator.cluster.topology import ClusterSpec
    from traces.model import ModelSpec

DEFAULT_STRATEGY = "ilp-load"


def add_failure_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``place`` for failed and failing fabrics."""
    p.add_argument("--repair", type=Path, default=None, metavar="LAYOUT",
                   help="Keep this layout of the healthy cluster (--healthy) on the failed one"
                        " (--topology, from `topology whatif`) and move only the experts that"
                        " sat on failed GPUs, to the nearest free slots (no --strategy).")
    p.add_argument("--healthy", type=Path, default=None, metavar="CLUSTER",
                   help="With --repair: the cluster file the layout was placed on.")
    p.add_argument("--robust", default=None, choices=[k for k in ELEMENT_KINDS if k != "server"],
                   help="Minimise the expected cost over every single failure of this class"
                        " that keeps the GPUs (the mean distance and wire time over them; exact"
                        " for ilp, ilp-load, ilp-origin, ilp-bytes).")


def check_failure_arguments(args: argparse.Namespace) -> str:
    """The strategy to run (``None`` with --repair), after the flags' combinations."""
    from placement.strategies import ROBUST_STRATEGIES

    if args.repair is not None:
        if args.healthy is None:
            raise InputError("--repair needs --healthy CLUSTER: the cluster the layout was"
                             " placed on (its GPU names map the layout onto --topology)")
        for flag, given in (("--strategy", args.strategy is not None),
                            ("--robust", args.robust is not None),
                            ("--replicas", args.replicas != 0),
                            ("--balance-eps", args.balance_eps is not None)):
            if given:
                raise InputError(f"--repair keeps the layout and moves only its lost experts;"
                                 f" drop {flag}")
        if args.topology is None:
            raise InputError("--repair: give the failed cluster as --topology FILE")
        return "repair"
    if args.healthy is not None:
        raise InputError("--healthy is for --repair")
    strategy = args.strategy or DEFAULT_STRATEGY
    if args.robust is not None and strategy not in ROBUST_STRATEGIES:
        raise InputError(f"--robust: {strategy} is not one of"
                         f" {', '.join(sorted(ROBUST_STRATEGIES))} (costs linear in distance"
                         " and wire time, solved exactly)")
    return strategy


def robust_problem(problem: PlacementProblem, cluster: ClusterSpec, routes: RouteTable,
                   failure_class: str) -> tuple[PlacementProblem, str]:
    """The problem on the mean arrays over the single failures, and a note on them."""
    from experiments.failure_scenarios import robust_arrays, scenarios

    found = scenarios(cluster, failure_class, routes)
    kept = sum(1 for s in found[1:] if s.routes is not None and s.keeps_gpus)
    arrays = robust_arrays(found)
    note = (f"expected cost over {kept} single {failure_class} failures that keep every GPU"
            f" ({len(found) - 1 - kept} more cut GPUs off and are left out)")
    return replace(problem, distance=arrays["distance"],
                   pair_seconds_per_byte=arrays["pair_seconds_per_byte"]), note


def repair_input(args: argparse.Namespace, model: ModelSpec) -> tuple[ClusterSpec, Any, int]:
    """The healthy cluster, the layout to repair and its redundant copies per layer."""
    from placement.layout_io import load_layout
    from simulator.cluster.io import load_cluster

    healthy = load_cluster(args.healthy)
    layout = load_layout(args.repair, model.num_moe_layers, model.num_routed_experts,
                         healthy.num_gpus, model.moe_layer_indices)
    copies = int((layout.expert_gpus >= 0).sum(axis=(1, 2)).max())
    return healthy, layout, copies - model.num_routed_experts


def repair_result(args: argparse.Namespace, problem: PlacementProblem, failed: ClusterSpec,
                  healthy: ClusterSpec, layout: Any, model: ModelSpec,
                  options: SolverOptions) -> PlacementResult:
    """The healthy layout repaired onto ``failed`` (:mod:`placement.repair`)."""
    from placement import PlacementResult, SolveStatus, expected_cost
    from placement.migration import expert_weight_bytes
    from placement.repair import repair_layout
    from simulator.cluster.failures import gpu_index_map
    from simulator.cluster.paths import gpu_distance_matrix

    t0 = time.perf_counter()
    try:
        index_map = gpu_index_map(healthy, failed)
    except InputError as exc:
        raise InputError(f"--healthy {args.healthy}: {exc}") from None
    r = repair_layout(layout, index_map, gpu_distance_matrix(healthy), problem.distance,
                      problem.slots_per_gpu, problem.max_per_gpu_per_layer, options)
    info: dict[str, Any] = {"repaired_copies": r.lost_copies, "moves": r.num_moves,
                            "reloaded": r.reloaded, "repaired_from": str(args.repair)}
    if model.moe_intermediate_size > 0:
        info["weight_bytes_per_copy_fp8"] = expert_weight_bytes(model, 1.0)
    message = (f"repaired {r.lost_copies} copies lost with {healthy.num_gpus - failed.num_gpus}"
               f" GPUs: {r.num_moves} copied from a surviving copy, {r.reloaded} reloaded (no"
               " copy left on any GPU)")
    return PlacementResult("repair", SolveStatus.HEURISTIC, r.layout,
                           expected_cost(problem, r.layout), time.perf_counter() - t0, options,
                           message=message, info=info)
