"""What a solver run said, and what it means for the user.

Like linopy, the project keeps two things apart:

* **what HiGHS said**: its model status string (``"Time limit reached"``) and a
  :class:`Termination` naming why it stopped (optimal, infeasible, time limit, iteration limit,
  interrupt...), with the solver's objective and its proven dual (lower) bound;
* **what it means**: a :class:`SolveStatus`: ``optimal`` (proven, within the MIP gap asked
  for), ``feasible`` (a layout with a proven gap), ``feasible-no-bound`` (a layout, nothing
  proven about it), ``infeasible``, ``no-solution`` (stopped by a limit before any layout) or
  ``error``; ``heuristic`` marks constructive baselines that never ran a solver.

A strategy that solves a model gives its :class:`~placement.problem.PlacementResult` a
:class:`SolverOutcome`; a strategy that computes its own bound (another solver, a relaxation)
builds one with :meth:`SolverOutcome.from_bound`::

    >>> o = SolverOutcome.from_bound(objective=10.0, dual_bound=9.0)
    >>> o.status.value, round(o.gap, 3)
    ('feasible', 0.1)
    >>> SolverOutcome.from_bound(objective=10.0, dual_bound=10.0).status.value
    'optimal'

The objective and bound are in the model's own units (hops, seconds on the wire, seconds on
the busiest link); the gap is relative: (objective - bound) / |objective|.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


class SolveStatus(enum.Enum):
    """What a placement result means for the user."""

    OPTIMAL = "optimal"  # proven optimal (within the relative MIP gap asked for)
    FEASIBLE = "feasible"  # a layout and a proven dual bound: the gap is finite
    FEASIBLE_NO_BOUND = "feasible-no-bound"  # a layout, no bound (gap infinite)
    HEURISTIC = "heuristic"  # a constructive baseline: valid layout, no solver, no claim
    INFEASIBLE = "infeasible"  # proven: no layout satisfies the constraints
    NO_SOLUTION = "no-solution"  # a limit stopped the solver before any layout was found
    ERROR = "error"  # the solver failed (model, presolve, solve or memory error)

    @property
    def has_layout(self) -> bool:
        """The statuses that come with a layout."""
        return self in _WITH_LAYOUT


_WITH_LAYOUT = frozenset(
    {SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.FEASIBLE_NO_BOUND,
     SolveStatus.HEURISTIC}
)


class Termination(enum.Enum):
    """Why the solver stopped (one value per kind of HiGHS model status)."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    TIME_LIMIT = "time-limit"
    ITERATION_LIMIT = "iteration-limit"
    SOLUTION_LIMIT = "solution-limit"
    INTERRUPT = "interrupt"
    OBJECTIVE_LIMIT = "objective-limit"  # objective bound or target reached
    MEMORY_LIMIT = "memory-limit"
    ERROR = "error"  # load, model, presolve, solve or postsolve error; status not set

    @property
    def is_limit(self) -> bool:
        """A limit or an interrupt stopped the solver: any incumbent is only feasible."""
        return self in _LIMITS


_LIMITS = frozenset(
    {Termination.TIME_LIMIT, Termination.ITERATION_LIMIT, Termination.SOLUTION_LIMIT,
     Termination.INTERRUPT, Termination.OBJECTIVE_LIMIT}
)

# Every HiGHS model status by its name in highspy.HighsModelStatus (names, not members, so
# this module does not import highspy; tests check that the table covers every member).
HIGHS_TERMINATION: dict[str, Termination] = {
    "kOptimal": Termination.OPTIMAL,
    "kInfeasible": Termination.INFEASIBLE,
    # The project's models have bounded variables, so "unbounded or infeasible" is infeasible.
    "kUnboundedOrInfeasible": Termination.INFEASIBLE,
    "kUnbounded": Termination.UNBOUNDED,
    "kTimeLimit": Termination.TIME_LIMIT,
    "kIterationLimit": Termination.ITERATION_LIMIT,
    "kSolutionLimit": Termination.SOLUTION_LIMIT,
    "kInterrupt": Termination.INTERRUPT,
    "kHighsInterrupt": Termination.INTERRUPT,
    "kObjectiveBound": Termination.OBJECTIVE_LIMIT,
    "kObjectiveTarget": Termination.OBJECTIVE_LIMIT,
    "kMemoryLimit": Termination.MEMORY_LIMIT,
    "kNotset": Termination.ERROR,
    "kLoadError": Termination.ERROR,
    "kModelError": Termination.ERROR,
    "kPresolveError": Termination.ERROR,
    "kSolveError": Termination.ERROR,
    "kPostsolveError": Termination.ERROR,
    # The project never builds a model without columns: an empty one is a bug, not an answer.
    "kModelEmpty": Termination.ERROR,
    "kUnknown": Termination.ERROR,
}


def relative_gap(objective: float, dual_bound: float) -> float:
    """(objective - bound) / |objective| for a minimisation; 0 when both are 0; inf if no bound.

    >>> relative_gap(4.0, 3.0), relative_gap(0.0, 0.0), relative_gap(2.0, float("nan"))
    (0.25, 0.0, inf)
    """
    if not (math.isfinite(objective) and math.isfinite(dual_bound)):
        return math.inf
    diff = max(0.0, objective - dual_bound)
    if diff == 0.0:
        return 0.0
    return diff / abs(objective) if objective != 0 else math.inf


def classify(
    termination: Termination, has_solution: bool, gap: float, gap_tolerance: float = 0.0
) -> SolveStatus:
    """What a termination means: the one rule from solver output to :class:`SolveStatus`.

    An optimal termination without a primal solution is an error; a limit with a solution is
    ``optimal`` if the gap is within ``gap_tolerance``, ``feasible`` if the gap is finite,
    else ``feasible-no-bound``; a limit without one is ``no-solution``.
    """
    if termination is Termination.OPTIMAL:
        return SolveStatus.OPTIMAL if has_solution else SolveStatus.ERROR
    if termination is Termination.INFEASIBLE:
        return SolveStatus.INFEASIBLE
    if termination.is_limit:
        if not has_solution:
            return SolveStatus.NO_SOLUTION
        if gap <= gap_tolerance:
            return SolveStatus.OPTIMAL
        return SolveStatus.FEASIBLE if math.isfinite(gap) else SolveStatus.FEASIBLE_NO_BOUND
    return SolveStatus.ERROR  # unbounded (impossible for bounded models), memory, errors


@dataclass(frozen=True)
class SolverOutcome:
    """One solve: what HiGHS said (``solver_status``, ``termination``) and what it means
    (``status``), with the solver's ``objective`` (nan without a solution), its proven
    ``dual_bound`` (nan without one) and the relative ``gap`` (0 proven optimal, inf no bound).
    """

    status: SolveStatus
    termination: Termination
    solver_status: str  # the solver's own words, e.g. HiGHS "Time limit reached"
    objective: float
    dual_bound: float
    gap: float
    time_s: float = 0.0

    @classmethod
    def from_solver(
        cls, termination: Termination, solver_status: str, objective: float, dual_bound: float,
        has_solution: bool, time_s: float = 0.0, gap_tolerance: float = 0.0,
    ) -> SolverOutcome:
        """From a solver's termination, objective and bound (gap and meaning derived)."""
        if not has_solution:
            objective = math.nan
        if termination is Termination.OPTIMAL and has_solution and not math.isfinite(dual_bound):
            dual_bound = objective  # an LP vertex or a closed MIP: the bound is the optimum
        gap = relative_gap(objective, dual_bound) if has_solution else math.inf
        status = classify(termination, has_solution, gap, gap_tolerance)
        return cls(status, termination, solver_status, objective, dual_bound, gap, time_s)

    @classmethod
    def from_bound(
        cls, objective: float, dual_bound: float, termination: Termination | None = None,
        solver_status: str = "bound computed", time_s: float = 0.0, gap_tolerance: float = 0.0,
    ) -> SolverOutcome:
        """A layout with cost ``objective`` and a proven lower bound (nan: no bound).

        ``optimal`` when the gap is within ``gap_tolerance``; else ``feasible`` (finite gap)
        or ``feasible-no-bound``.  ``termination``: why the search stopped (default: optimal
        when the gap is closed, else a solution limit, i.e. the search settled for it).
        """
        gap = relative_gap(objective, dual_bound)
        if termination is None:
            closed = gap <= gap_tolerance
            termination = Termination.OPTIMAL if closed else Termination.SOLUTION_LIMIT
        status = classify(termination, True, gap, gap_tolerance)
        return cls(status, termination, solver_status, objective, dual_bound, gap, time_s)

    def scaled(self, factor: float) -> SolverOutcome:
        """Objective and bound times ``factor`` (a model solved in scaled units)."""
        return replace(self, objective=self.objective * factor,
                       dual_bound=self.dual_bound * factor)

    def without_bound(self, solver_status: str | None = None) -> SolverOutcome:
        """The same run, for a layout the bound says nothing about (a fallback layout)."""
        return SolverOutcome(
            SolveStatus.FEASIBLE_NO_BOUND, self.termination, solver_status or self.solver_status,
            math.nan, math.nan, math.inf, self.time_s,
        )

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON and tables (``status``/``termination`` as their words)."""
        return {
            "status": self.status.value, "termination": self.termination.value,
            "solver_status": self.solver_status, "solver_objective": self.objective,
            "dual_bound": self.dual_bound, "gap": self.gap, "solver_time_s": self.time_s,
        }

    def describe(self) -> str:
        """One line: status, termination, objective, bound and gap."""
        if not self.status.has_layout:
            return f"{self.status.value} ({self.solver_status})"
        return (
            f"{self.status.value} ({self.solver_status}): solver objective {self.objective:.6g},"
            f" dual bound {self.dual_bound:.6g}, gap {self.gap:.3g}"
        )
