"""Expert placement: pure functions from numbers (distances, capacities, activation) to layouts.

Never imports simpy and never sees a graph object.
"""

from placement.check import check_layout
from placement.outcome import SolverOutcome, SolveStatus, Termination
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
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
    "SolverOutcome",
    "Termination",
    "check_layout",
    "default_slots",
    "expected_cost",
    "solve_placement",
]
