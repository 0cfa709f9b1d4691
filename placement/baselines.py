"""Baseline strategies (no solver)."""

from __future__ import annotations

import time

import numpy as np

from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    SolveStatus,
    expected_cost,
)


def _result(
    name: str, problem: PlacementProblem, gpus: np.ndarray, options: SolverOptions, t0: float
) -> PlacementResult:
    layout = ExpertLayout.from_primary(gpus, problem.num_gpus)
    return PlacementResult(
        strategy=name,
        status=SolveStatus.HEURISTIC,
        layout=layout,
        objective=expected_cost(problem, layout),
        mip_gap=0.0,
        runtime_s=time.perf_counter() - t0,
        options=options,
        message="constructive baseline (no optimisation)",
    )


def round_robin(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Expert i of layer l on GPU (l * experts + i) mod gpus: the paper's round-robin."""
    t0 = time.perf_counter()
    L, E = problem.num_layers, problem.num_experts
    idx = np.arange(L)[:, None] * E + np.arange(E)[None, :]
    return _result("round-robin", problem, idx % problem.num_gpus, options, t0)
