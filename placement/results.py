"""Results of a solve: with a layout (:func:`finish`) or with the reason there is none
(:func:`failed`), both carrying the solver's outcome."""

from __future__ import annotations

import time

from placement.outcome import SolverOutcome, SolveStatus
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)


def _infeasible(problem: PlacementProblem) -> str:
    eps = problem.balance_eps
    if eps is not None:
        mean = problem.activation.sum() / problem.num_gpus
        return (
            f"no layout keeps every GPU's expected token load within (1 + {eps:g}) x the mean"
            f" ({(1 + eps) * mean:.4g} routed tokens per token) with {problem.slots_per_gpu}"
            f" slots per GPU and at most {problem.max_per_gpu_per_layer} experts of a layer"
            " per GPU; raise the balance epsilon or add slots"
        )
    return (
        f"no layout fits: {problem.num_gpus} GPUs with {problem.slots_per_gpu} slots each and at"
        f" most {problem.max_per_gpu_per_layer} experts of one layer per GPU cannot hold"
        f" {problem.num_layers} layers x {problem.num_experts} experts"
    )


def failed(
    name: str, problem: PlacementProblem, options: SolverOptions, outcome: SolverOutcome,
    t0: float, info: dict[str, object],
) -> PlacementResult:
    """A result without a layout, with the reason in words."""
    elapsed = time.perf_counter() - t0
    status = outcome.status
    if status.has_layout:  # the solver had a layout that this strategy could not use
        status = SolveStatus.NO_SOLUTION
    if status is SolveStatus.INFEASIBLE:
        msg = _infeasible(problem)
    elif status is SolveStatus.NO_SOLUTION:
        msg = (
            f"HiGHS stopped ({outcome.solver_status}) after {elapsed:.3g} s before"
            f" finding any layout; raise the time limit (now {options.time_limit_s:g} s:"
            " --time-limit, study key time_limit_s)"
        )
    else:
        msg = f"HiGHS: {outcome.solver_status}"
    return PlacementResult(
        strategy=name, status=status, layout=None, objective=float("nan"),
        runtime_s=elapsed, options=options, message=msg, info=info, solver=outcome,
    )


def finish(
    name: str,
    problem: PlacementProblem,
    options: SolverOptions,
    layout: ExpertLayout,
    outcome: SolverOutcome,
    t0: float,
    info: dict[str, object],
    message: str = "",
) -> PlacementResult:
    """A result with a layout: its independent cost, the solver's outcome, a message."""
    if not message:
        if outcome.status is SolveStatus.FEASIBLE:
            message = (
                f"HiGHS stopped ({outcome.solver_status}) with a layout, relative gap"
                f" {outcome.gap:.3g} to the dual bound"
            )
        elif outcome.status is SolveStatus.FEASIBLE_NO_BOUND:
            message = f"HiGHS stopped ({outcome.solver_status}) with a layout but no bound"
        else:
            message = f"MIP, HiGHS {outcome.solver_status}"
    return PlacementResult(
        strategy=name,
        status=outcome.status,
        layout=layout,
        objective=expected_cost(problem, layout),
        runtime_s=time.perf_counter() - t0,
        options=options,
        message=message,
        info=info,
        solver=outcome,
    )
