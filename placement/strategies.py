"""Every strategy by name, one signature: (PlacementProblem, SolverOptions) -> PlacementResult."""

from __future__ import annotations

from collections.abc import Callable

from placement.baselines import round_robin
from placement.ilp import ilp_load, ilp_uniform
from placement.problem import PlacementProblem, PlacementResult, SolverOptions
from traces.errors import InputError

Strategy = Callable[[PlacementProblem, SolverOptions], PlacementResult]

STRATEGIES: dict[str, Strategy] = {
    "round-robin": round_robin,
    "ilp": ilp_uniform,
    "ilp-load": ilp_load,
}


def solve_placement(
    problem: PlacementProblem, strategy: str = "ilp-load", options: SolverOptions | None = None
) -> PlacementResult:
    """Place experts with the named strategy."""
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise InputError(
            f"unknown placement strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
    return fn(problem, options or SolverOptions())
