"""A small sparse LP/MIP builder on HiGHS (highspy), shared by the ILP variants.

Columns and rows are added in blocks (numpy arrays); the matrix is collected as COO triplets
and handed to HiGHS column-wise.  Row blocks carry names (``assign``, ``cap_layer``...) so that
an infeasible model can be explained in words.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import highspy
import numpy as np

from placement.outcome import HIGHS_TERMINATION, SolverOutcome, SolveStatus, Termination
from placement.problem import SolverOptions


def _agrees(model: Model, x: np.ndarray, objective: float) -> bool:
    """Whether ``objective`` (HiGHS's, unscaled) is the cost of the returned point ``x``."""
    own = float(np.concatenate(model.cost) @ x)
    return abs(own - objective) <= 1e-6 * max(1.0, abs(own), abs(objective))


def termination_of(model_status: highspy.HighsModelStatus) -> Termination:
    """Why HiGHS stopped, for every HiGHS model status (the table lives in placement.outcome)."""
    return HIGHS_TERMINATION[model_status.name]


@dataclass
class Model:
    """Columns, named row blocks and COO triplets of a linear model."""

    cost: list[np.ndarray] = field(default_factory=list)
    lower: list[np.ndarray] = field(default_factory=list)
    upper: list[np.ndarray] = field(default_factory=list)
    integer: list[np.ndarray] = field(default_factory=list)
    row_lower: list[np.ndarray] = field(default_factory=list)
    row_upper: list[np.ndarray] = field(default_factory=list)
    row_blocks: list[tuple[str, int, int]] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)
    vals: list[np.ndarray] = field(default_factory=list)
    num_col: int = 0
    num_row: int = 0
    objective_scale: float = 1.0  # HiGHS sees cost / scale (keeps tiny costs above tolerances)

    def add_cols(
        self, cost: np.ndarray, lower: float | np.ndarray, upper: float | np.ndarray,
        integer: bool = False,
    ) -> int:
        """Add ``len(cost)`` columns; returns the index of the first."""
        n = len(cost)
        first = self.num_col
        self.cost.append(np.asarray(cost, dtype=np.float64))
        self.lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)).copy())
        self.upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)).copy())
        self.integer.append(np.full(n, integer))
        self.num_col += n
        return first

    def add_rows(
        self, name: str, lower: float | np.ndarray, upper: float | np.ndarray, n: int
    ) -> int:
        """Add a block of ``n`` rows named ``name``; returns the index of the first."""
        first = self.num_row
        self.row_lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)).copy())
        self.row_upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)).copy())
        self.row_blocks.append((name, first, n))
        self.num_row += n
        return first

    def add_entries(self, rows: np.ndarray, cols: np.ndarray, vals: float | np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64).ravel()
        self.rows.append(rows)
        self.cols.append(np.asarray(cols, dtype=np.int64).ravel())
        self.vals.append(np.broadcast_to(np.asarray(vals, dtype=np.float64), rows.shape).ravel())

    def is_mip(self) -> bool:
        return bool(np.concatenate(self.integer).any()) if self.integer else False

    def to_highs(self, integer: bool) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_ = self.num_col
        lp.num_row_ = self.num_row
        cost = np.concatenate(self.cost)
        big = float(np.abs(cost).max()) if cost.size else 0.0
        self.objective_scale = big if big > 0 else 1.0
        lp.col_cost_ = cost / self.objective_scale
        lp.col_lower_ = np.concatenate(self.lower)
        lp.col_upper_ = np.concatenate(self.upper)
        lp.row_lower_ = np.concatenate(self.row_lower)
        lp.row_upper_ = np.concatenate(self.row_upper)
        r = np.concatenate(self.rows)
        c = np.concatenate(self.cols)
        v = np.concatenate(self.vals)
        order = np.lexsort((r, c))
        r, c, v = r[order], c[order], v[order]
        start = np.searchsorted(c, np.arange(self.num_col + 1)).astype(np.int32)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = start
        lp.a_matrix_.index_ = r.astype(np.int32)
        lp.a_matrix_.value_ = v
        lp.a_matrix_.num_col_ = self.num_col
        lp.a_matrix_.num_row_ = self.num_row
        if integer:
            ints = np.concatenate(self.integer)
            lp.integrality_ = [
                highspy.HighsVarType.kInteger if f else highspy.HighsVarType.kContinuous
                for f in ints
            ]
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


# HiGHS starts one task scheduler per process, on the thread count of its first run; a later
# run asking for another count fails ("Not Set").  The scheduler is restarted on a change, and
# on this module's first run too: other code in the process (a test, a user's script, another
# library) may have started it with a count of its own.
_scheduler_lock = threading.Lock()
_scheduler_threads: list[int] = []


def _scheduler_for(threads: int) -> None:
    with _scheduler_lock:
        if not _scheduler_threads or _scheduler_threads[0] != threads:
            highspy.Highs.resetGlobalScheduler(True)
        _scheduler_threads[:] = [threads]


def quiet_highs(threads: int) -> highspy.Highs:
    """A HiGHS instance that prints nothing, on ``threads`` threads."""
    _scheduler_for(int(threads))
    with _stdout_silenced():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", int(threads))
    return h


@dataclass(frozen=True, eq=False)
class Solved:
    """What a HiGHS run returned: primal values (None if none) and the outcome."""

    x: np.ndarray | None
    outcome: SolverOutcome

    @property
    def status(self) -> SolveStatus:
        return self.outcome.status


def run_highs(
    model: Model,
    options: SolverOptions,
    integer: bool,
    start: np.ndarray | None = None,
    time_limit_s: float | None = None,
    deadline: float | None = None,
) -> Solved:
    """Solve ``model`` as an LP (simplex, a vertex) or as a MIP (with an optional start).

    ``deadline`` (a ``time.perf_counter()`` instant): the solve gets only what is left of it
    once the model is handed to HiGHS (converting a large model takes seconds), and does not
    start when nothing is left: a time-limit outcome without a solution.
    """
    called = time.perf_counter()
    h = quiet_highs(options.threads)
    h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    h.setOptionValue("random_seed", int(options.seed))
    if not integer:
        h.setOptionValue("solver", "simplex")  # a vertex: integral on the TU models
    h.passModel(model.to_highs(integer))
    if integer and start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = np.asarray(start, dtype=np.float64)
        sol.value_valid = True
        h.setSolution(sol)
    limit = float(time_limit_s or options.time_limit_s)
    if deadline is not None:
        left = deadline - time.perf_counter()
        if left <= 0:
            return Solved(None, SolverOutcome.from_solver(
                Termination.TIME_LIMIT, "Time limit reached while building the model",
                math.nan, math.nan, False))
        limit = min(limit, left)
    h.setOptionValue("time_limit", limit)
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    has = info.primal_solution_status == 2
    x = np.asarray(h.getSolution().col_value) if has else None
    scale = model.objective_scale
    objective = float(info.objective_function_value) * scale if has else float("nan")
    if integer and start is not None and x is not None and not _agrees(model, x, objective):
        # Seen with highspy 1.16: after a MIP start the solver may report an objective (and
        # "Optimal") that belongs to another point while returning the start's values.  The
        # answer is not trusted: the model is solved again without the start, in what is left
        # of this call's time limit (the call as a whole keeps its limit).
        whole = deadline if deadline is not None else called + float(
            time_limit_s or options.time_limit_s)
        return run_highs(model, options, integer, None, time_limit_s, whole)
    # A MIP's dual bound is HiGHS's; an LP has one only when solved (its optimum).
    bound = float(info.mip_dual_bound) * scale if integer else float("nan")
    outcome = SolverOutcome.from_solver(
        termination_of(ms), h.modelStatusToString(ms), objective, bound, has,
        time_s=float(h.getRunTime()), gap_tolerance=float(options.mip_rel_gap) if integer else 0.0,
    )
    return Solved(x, outcome)


def rerun_optimal(h: highspy.Highs, deadline: float) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Solve the model held by ``h`` again (a master after new columns) within ``deadline``;
    (column values, row duals, objective) when optimal, else None.  HiGHS' time limit counts
    every run of the instance, so the limit is its run time so far plus what is left."""
    h.setOptionValue("time_limit", h.getRunTime() + max(1e-3, deadline - time.perf_counter()))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    return (np.asarray(sol.col_value), np.asarray(sol.row_dual),
            float(h.getInfo().objective_function_value))


def is_integral(x: np.ndarray, tol: float = 1e-6) -> bool:
    return bool(np.all(np.abs(x - np.round(x)) < tol))
