"""Expert placement: pure functions from numbers (distances, capacities, activation) to layouts.

Never imports simpy and never sees a graph object.  The names below are loaded on first use
(PEP 562): HiGHS and pandas are imported only by a command that places experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traces.infra.lazy import lazy_attributes

if TYPE_CHECKING:
    from placement.check import check_layout
    from placement.options import SolverOptions
    from placement.outcome import SolverOutcome, SolveStatus, Termination
    from placement.problem import (
        ExpertLayout,
        PlacementProblem,
        PlacementResult,
        default_slots,
        expected_cost,
    )
    from placement.strategies import SAMPLE_STRATEGIES, STRATEGIES, solve_placement

_WHERE = {
    "check_layout": "placement.check",
    "ExpertLayout": "placement.problem",
    "PlacementProblem": "placement.problem",
    "PlacementResult": "placement.problem",
    "SolverOptions": "placement.options",
    "SolveStatus": "placement.outcome",
    "SolverOutcome": "placement.outcome",
    "Termination": "placement.outcome",
    "default_slots": "placement.problem",
    "expected_cost": "placement.problem",
    "SAMPLE_STRATEGIES": "placement.strategies",
    "STRATEGIES": "placement.strategies",
    "solve_placement": "placement.strategies",
}

__all__ = [
    "SAMPLE_STRATEGIES",
    "ExpertLayout",
    "PlacementProblem",
    "PlacementResult",
    "STRATEGIES",
    "SolveStatus",
    "SolverOptions",
    "SolverOutcome",
    "Termination",
    "check_layout",
    "default_slots",
    "expected_cost",
    "solve_placement",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
