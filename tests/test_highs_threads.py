"""HiGHS keeps one task scheduler per process, sized by its first run: a later run asking for
another thread count used to end "Not Set" (an error outcome).  ``quiet_highs`` restarts the
scheduler when the count changes, so solves with any ``--threads`` follow each other."""

from __future__ import annotations

import highspy
import numpy as np

from placement import SolverOptions, SolveStatus, solve_placement
from placement.lp import quiet_highs
from tests.test_placement_variants import _problem


def _status(threads: int) -> str:
    h = quiet_highs(threads)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = 1, 0
    lp.col_cost_ = np.array([1.0])
    lp.col_lower_, lp.col_upper_ = np.array([0.0]), np.array([1.0])
    h.passModel(lp)
    h.run()
    return h.modelStatusToString(h.getModelStatus())


def test_thread_counts_can_change_between_runs() -> None:
    assert [_status(t) for t in (1, 2, 1, 3, 3)] == ["Optimal"] * 5


def test_placements_with_other_thread_counts_in_one_process() -> None:
    for threads in (1, 2, 1):
        res = solve_placement(_problem(0), "ilp-load", SolverOptions(threads=threads))
        assert res.status is SolveStatus.OPTIMAL, (threads, res.status)
