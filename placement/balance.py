"""The compute-balance guard (``balance_eps``) by decomposition, for load-proportional costs.

With ``ilp-load`` (and ``ilp-bytes`` without per-origin activation) an expert's cost on a GPU
is p[l, i] x c[g] (c: the expected round trip from the origins), so a layout's cost is c . P
with P[g] = the load summed over the experts on GPU g, and the balance rows are P[g] <= cap =
(1 + eps) x the mean load.  Both depend on the layout only through P, so the model is solved
in P-space like ``ilp-bottleneck`` (``placement.load_polytope``): column generation over the
load polytope at GPU level (a GPU holds ``max_per_gpu_per_layer`` experts of a layer) with
the balance rows in the master.  For prices nu >= 0 on them every layout with P <= cap costs
at least min_P (c + nu) . P - nu . cap (Lagrangian), the bound reported.

Layout: each layer dealt by one of the master's GPU orders (apportioned by weight), swaps
towards the master's P*, then repair swaps that move load off GPUs above the cap at the least
cost; if a GPU stays above it, the balanced greedy layout (hottest first to the least loaded
GPU) is used when it is cheaper or the only balanced one.  Costs that are not
load-proportional (per-origin activation, the uniform ``ilp``) keep the MIP of
``placement.assignment``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from placement.assignment import balanced_gpus
from placement.load_polytope import (
    MASTER_SHARE,
    LoadPolytope,
    layout_from_columns,
    layout_near,
    refine_swaps,
    solve_master,
)
from placement.outcome import SolverOutcome, SolveStatus, Termination
from placement.problem import ExpertLayout, PlacementProblem, PlacementResult, SolverOptions
from placement.results import failed, finish

REPAIR_MAX_MOVES = 5_000
EXACT_MAX_BINARIES = 20_000  # the MIP closes the gap on models up to layers x experts x GPUs


def repair_caps(
    activation: np.ndarray, gpu: np.ndarray, cost: np.ndarray, cap: float, deadline: float,
) -> np.ndarray:
    """Swaps of two experts of one layer until no GPU's load exceeds ``cap`` (or none helps).

    From the most loaded GPU a: among swaps that keep the receiver b within the cap, the one
    that removes a's whole excess at the least cost increase delta x (c[b] - c[a]); if none
    removes it all, the one that removes most.  Returns the new GPU of every expert [L, E].
    """
    L, E = activation.shape
    G = len(cost)
    gpu = gpu.copy()
    load = np.bincount(gpu.ravel(), weights=activation.ravel(), minlength=G)
    for _ in range(REPAIR_MAX_MOVES):
        a = int(np.argmax(load))
        excess = load[a] - cap
        # every move lowers the total excess (b stays within the cap): no cycles
        if excess <= 1e-12 * cap or time.perf_counter() >= deadline:
            break
        li_a, i_a = np.nonzero(gpu == a)  # experts on a: [n]
        # delta[n, j]: swap expert (li, i) on a with expert j of the same layer
        w_a = activation[li_a, i_a][:, None]  # [n, 1]
        w_b = activation[li_a]  # [n, E]
        b = gpu[li_a]  # [n, E]
        delta = w_a - w_b
        ok = (b != a) & (delta > 0) & (load[b] + delta <= cap)
        if not ok.any():
            break
        fixes = ok & (delta >= excess)
        if fixes.any():
            score = np.where(fixes, delta * (cost[b] - cost[a]), np.inf)
            k = int(np.argmin(score))
        else:
            k = int(np.argmax(np.where(ok, delta, -np.inf)))
        n, j = divmod(k, E)
        li, i = int(li_a[n]), int(i_a[n])
        bj = int(b[n, j])
        gpu[li, i], gpu[li, j] = bj, a
        load[a] -= delta[n, j]
        load[bj] += delta[n, j]
    return gpu


def solve_balanced(
    problem: PlacementProblem, options: SolverOptions, name: str, gpu_cost: np.ndarray,
    exact: Callable[[SolverOptions], PlacementResult],
) -> PlacementResult:
    """``balance_eps`` with cost p[l, i] x gpu_cost[g]: bound and layout in P-space.

    ``exact``: the MIP of the same model, run with the time left when the gap is open and the
    model is small (it proves optimality or infeasibility there).
    """
    assert problem.balance_eps is not None
    t0 = time.perf_counter()
    deadline = t0 + options.time_limit_s
    act = problem.activation
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    cap = (1 + problem.balance_eps) * act.sum() / G
    cap_layer = np.full(G, problem.max_per_gpu_per_layer)
    cap_total = np.full(G, problem.slots_per_gpu)
    info: dict[str, object] = {"unit": "gpu", "method": "decomposition (load polytope)"}
    greedy = balanced_gpus(problem, problem.balance_eps)
    info["balanced_start"] = greedy is not None
    starts = () if greedy is None else (
        np.bincount(greedy, weights=act.ravel(), minlength=G),)
    master_end = time.perf_counter() + MASTER_SHARE * max(0.0, deadline - time.perf_counter())
    master = solve_master(LoadPolytope.of(act, cap_layer), master_end, options.threads, starts,
                          cost=gpu_cost, cap=np.full(G, cap))
    info.update(master_columns=master.columns, master_iterations=master.iterations,
                master_converged=master.converged)
    candidates = [] if greedy is None else [greedy.reshape(L, E)]
    near = layout_from_columns(act, cap_layer, cap_total, master)
    if near is None:
        near = layout_near(act, cap_layer, cap_total, master.target)
    if near is not None:
        near, info["swap_moves"] = refine_swaps(
            act, near, cap_layer, cap_total, master.target, deadline, lambda P: False)
        candidates.insert(0, repair_caps(act, near, gpu_cost, cap, deadline))

    def loads(x: np.ndarray) -> np.ndarray:
        return np.bincount(x.ravel(), weights=act.ravel(), minlength=G)

    ok = [x for x in candidates if (loads(x) <= cap * (1 + 1e-9)).all()]
    small = L * E * G <= EXACT_MAX_BINARIES
    # The LP relaxation itself needs the slack: no layout can be balanced.
    lp_infeasible = master.converged and bool((master.target > cap * (1 + 1e-6)).any())
    outcome = None
    if ok:
        best = min(ok, key=lambda x: float(loads(x) @ gpu_cost))
        info["layout_source"] = "balanced greedy" if greedy is not None \
            and best is candidates[-1] else "decomposition"
        outcome = SolverOutcome.from_bound(float(loads(best) @ gpu_cost), master.bound,
                                           solver_status="Dantzig-Wolfe bound",
                                           time_s=time.perf_counter() - t0,
                                           gap_tolerance=options.mip_rel_gap)
    left = deadline - time.perf_counter()
    if small and not lp_infeasible and (outcome is None or outcome.gap > options.mip_rel_gap) \
            and left > 0:
        res = exact(replace(options, time_limit_s=left))
        res.info["decomposition_bound"] = master.bound
        if res.status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE) or outcome is None or (
                res.layout is not None and res.solver is not None
                and res.solver.objective < outcome.objective):
            return replace(res, options=options, runtime_s=time.perf_counter() - t0)
    if outcome is None:
        why = SolverOutcome.from_solver(
            Termination.INFEASIBLE if lp_infeasible else Termination.SOLUTION_LIMIT,
            "LP relaxation infeasible" if lp_infeasible else "no balanced layout found",
            np.nan, np.nan, has_solution=False, time_s=time.perf_counter() - t0)
        return failed(name, problem, options, why, t0, info)
    layout = ExpertLayout.from_primary(best, problem.num_gpus)
    return finish(name, problem, options, layout, outcome, t0, info,
                  f"compute balance by decomposition: gap to the lower bound {outcome.gap:.2g}")
