"""HiGHS keeps one task scheduler per process, sized by its first run: a later run asking for
another thread count used to end "Not Set" (an error outcome).  ``quiet_highs`` restarts the
scheduler when the count changes, so solves with any ``--threads`` follow each other, and on
its first run, so HiGHS started by other code in the process (another count) does not break it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def test_a_scheduler_started_by_other_code_first() -> None:
    # A fresh process: a plain highspy run on HiGHS's default thread count starts the
    # scheduler, then the project solves on one thread (tests/test_maxmin.py's reference LP
    # before a placement test used to end "Not Set" in one pytest process).
    code = textwrap.dedent("""
        import highspy, numpy as np
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 2)
        h.addVar(0.0, 1.0)
        h.run()
        from placement import SolverOptions, solve_placement
        from tests.test_placement_variants import _problem
        res = solve_placement(_problem(0), "ilp-load", SolverOptions(threads=1))
        print(res.status.value)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split()[-1] == "optimal", done.stdout + done.stderr
