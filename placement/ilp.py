"""The paper's ILP and ILPLoad, solved with HiGHS (highspy).

Variables x[l, i, s] in {0, 1}: expert i of MoE layer l on server s.  Minimise
sum p[l, i] * c[s] * x[l, i, s] with c[s] the expected dispatch + combine distance from a
token's origin to server s; subject to ``assign[l,i]`` (each expert placed once),
``cap_layer[l,s]`` (experts of one layer per server) and ``cap_total[s]`` (experts per server).

Structure: each column has a 1 in one assign row, in one cap_layer row and in the cap_total row
of the same server; cap_layer(l, s) rows nest inside cap_total(s) rows.  Both row families are
laminar, so the matrix is totally unimodular: the LP relaxation has integral vertices.  We
solve the LP with simplex (a vertex), check integrality, and fall back to the MIP only if the
check fails.  Experts on a server are then spread over its GPUs (``placement.spread``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import highspy
import numpy as np

from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    SolveStatus,
    expected_cost,
)
from placement.spread import spread_over_gpus

# Every HiGHS model status, mapped explicitly (style guide: linopy's CONDITION_MAP).
_STATUS = {
    highspy.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: SolveStatus.INFEASIBLE,
    highspy.HighsModelStatus.kUnboundedOrInfeasible: SolveStatus.INFEASIBLE,
    highspy.HighsModelStatus.kUnbounded: SolveStatus.ERROR,
    highspy.HighsModelStatus.kTimeLimit: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kIterationLimit: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kSolutionLimit: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kInterrupt: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kHighsInterrupt: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kObjectiveBound: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kObjectiveTarget: SolveStatus.FEASIBLE,
    highspy.HighsModelStatus.kMemoryLimit: SolveStatus.ERROR,
    highspy.HighsModelStatus.kNotset: SolveStatus.UNKNOWN,
    highspy.HighsModelStatus.kLoadError: SolveStatus.ERROR,
    highspy.HighsModelStatus.kModelError: SolveStatus.ERROR,
    highspy.HighsModelStatus.kPresolveError: SolveStatus.ERROR,
    highspy.HighsModelStatus.kSolveError: SolveStatus.ERROR,
    highspy.HighsModelStatus.kPostsolveError: SolveStatus.ERROR,
    highspy.HighsModelStatus.kModelEmpty: SolveStatus.ERROR,
    highspy.HighsModelStatus.kUnknown: SolveStatus.UNKNOWN,
}


def server_cost(problem: PlacementProblem) -> np.ndarray:
    """c[s]: mean over the server's GPUs of the expected round-trip distance from origins."""
    gc = problem.gpu_cost()
    counts = np.bincount(problem.gpu_server)
    return np.bincount(problem.gpu_server, weights=gc) / counts


def build_model(problem: PlacementProblem, weights: np.ndarray) -> highspy.HighsLp:
    """The LP of the ILP family for activation ``weights`` [layers, experts]."""
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    c = server_cost(problem)
    gps = np.bincount(problem.gpu_server, minlength=S)
    ncol = L * E * S
    col = np.arange(ncol)
    s_of = col % S
    li_of = col // S  # l * E + i
    l_of = li_of // E
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = L * E + L * S + S
    lp.col_cost_ = (weights.reshape(-1)[li_of] * c[s_of]).astype(np.float64)
    lp.col_lower_ = np.zeros(ncol)
    lp.col_upper_ = np.ones(ncol)
    lp.row_lower_ = np.concatenate([np.ones(L * E), np.zeros(L * S), np.zeros(S)])
    lp.row_upper_ = np.concatenate(
        [
            np.ones(L * E),
            np.tile(gps * problem.max_per_gpu_per_layer, L).astype(np.float64),
            (gps * problem.slots_per_gpu).astype(np.float64),
        ]
    )
    idx = np.stack([li_of, L * E + l_of * S + s_of, L * E + L * S + s_of], axis=1)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 3 * ncol + 1, 3, dtype=np.int32)
    lp.a_matrix_.index_ = idx.reshape(-1).astype(np.int32)
    lp.a_matrix_.value_ = np.ones(3 * ncol)
    lp.a_matrix_.num_col_ = ncol
    lp.a_matrix_.num_row_ = lp.num_row_
    return lp


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """HiGHS prints its banner from C++ when created, before options can be set."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def run_highs(lp: highspy.HighsLp, options: SolverOptions, integer: bool) -> highspy.Highs:
    with _stdout_silenced():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(options.time_limit_s))
    h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    h.setOptionValue("threads", int(options.threads))
    h.setOptionValue("random_seed", int(options.seed))
    if integer:
        lp.integrality_ = [highspy.HighsVarType.kInteger] * lp.num_col_
    else:
        h.setOptionValue("solver", "simplex")
    h.passModel(lp)
    h.run()
    return h


def _infeasibility_reason(problem: PlacementProblem) -> str:
    g = problem.num_gpus
    return (
        f"no layout fits: {g} GPUs with {problem.slots_per_gpu} slots each and at most"
        f" {problem.max_per_gpu_per_layer} experts of one layer per GPU cannot hold"
        f" {problem.num_layers} layers x {problem.num_experts} experts"
    )


def solve_ilp(
    problem: PlacementProblem,
    options: SolverOptions,
    weights: np.ndarray,
    name: str,
) -> PlacementResult:
    """Solve the ILP for the given activation weights and spread experts over GPUs."""
    t0 = time.perf_counter()
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    lp = build_model(problem, weights)
    h = run_highs(lp, options, integer=False)
    status = _STATUS.get(h.getModelStatus(), SolveStatus.UNKNOWN)
    info: dict[str, object] = {"highs_status": h.modelStatusToString(h.getModelStatus())}
    x = np.asarray(h.getSolution().col_value) if status is SolveStatus.OPTIMAL else None
    integral = x is not None and bool(np.all(np.minimum(np.abs(x), np.abs(x - 1)) < 1e-6))
    info["lp_integral"] = integral
    gap = 0.0
    if status is SolveStatus.OPTIMAL and not integral:
        h = run_highs(build_model(problem, weights), options, integer=True)
        status = _STATUS.get(h.getModelStatus(), SolveStatus.UNKNOWN)
        info["highs_status"] = h.modelStatusToString(h.getModelStatus())
        has = h.getInfo().primal_solution_status == 2
        x = np.asarray(h.getSolution().col_value) if has else None
        gap = float(h.getInfo().mip_gap) if has else float("inf")
        if x is None and status is SolveStatus.FEASIBLE:
            status = SolveStatus.NO_SOLUTION
    if x is None or status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        if status is SolveStatus.FEASIBLE:  # a limit stopped HiGHS before any layout existed
            status = SolveStatus.NO_SOLUTION
        if status is SolveStatus.INFEASIBLE:
            msg = _infeasibility_reason(problem)
        elif status is SolveStatus.NO_SOLUTION:
            msg = (
                f"HiGHS stopped ({info['highs_status']}) after {time.perf_counter() - t0:.3g} s"
                f" before finding any layout; raise time_limit_s (now {options.time_limit_s})"
            )
        else:
            msg = f"HiGHS: {info['highs_status']}"
        return PlacementResult(
            strategy=name, status=status, layout=None, objective=float("nan"),
            mip_gap=float("inf"),
            runtime_s=time.perf_counter() - t0, options=options, message=msg, info=info,
        )
    expert_server = np.argmax(x.reshape(L, E, S), axis=2)
    layout = ExpertLayout.from_primary(spread_over_gpus(problem, expert_server), problem.num_gpus)
    info["solver_objective"] = float(h.getInfo().objective_function_value)
    return PlacementResult(
        strategy=name,
        status=status,
        layout=layout,
        objective=expected_cost(problem, layout),
        mip_gap=gap,
        runtime_s=time.perf_counter() - t0,
        options=options,
        message=(
            "LP relaxation integral (network-flow structure)"
            if integral
            else f"HiGHS stopped ({info['highs_status']}) with an incumbent, relative gap {gap:.3g}"
            if status is SolveStatus.FEASIBLE
            else ""
        ),
        info=info,
    )


def ilp_uniform(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILP: every expert equally likely, p = top_k / experts."""
    k = problem.activation[0].sum()
    w = np.full_like(problem.activation, k / problem.num_experts, dtype=np.float64)
    return solve_ilp(problem, options, w, "ilp")


def ilp_load(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILPLoad: measured activation p[l, i]."""
    return solve_ilp(problem, options, problem.activation.astype(np.float64), "ilp-load")
