"""Expert placement: pure functions from numbers (distances, capacities, activation) to layouts.

Never imports simpy and never sees a graph object.
"""

from placement.check import check_layout
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    SolveStatus,
    default_slots,
    expected_cost,
)
from placement.strategies import SAMPLE_STRATEGIES, STRATEGIES, solve_placement

__all__ = [
    "SAMPLE_STRATEGIES",
    "STRATEGIES",
    "ExpertLayout",
    "PlacementProblem",
    "PlacementResult",
    "SolveStatus",
    "SolverOptions",
    "check_layout",
    "default_slots",
    "expected_cost",
    "solve_placement",
]
