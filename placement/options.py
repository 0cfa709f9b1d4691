"""Solver options (HiGHS), apart from the problem so that the command line reads their
defaults without importing pandas or HiGHS."""

from __future__ import annotations

from dataclasses import dataclass

from traces.infra.options import check_options, option


@dataclass(frozen=True, slots=True)
class SolverOptions:
    """HiGHS options, recorded with every result."""

    time_limit_s: float = option(60.0, "Solver time limit.", "s", 0, 1e7, low_open=True)
    mip_rel_gap: float = option(  # HiGHS's own default
        1e-4, "Relative MIP gap to stop at (MIP variants; the TU ILPs are exact).", "", 0, 1,
        high_open=True)
    threads: int = option(1, "HiGHS threads.", "threads", 1, 1024)
    seed: int = option(0, "HiGHS random_seed (and baseline rng).", "", 0, 2**31 - 1)
    flatten_popularity: float = option(
        0.0, "dedup: weight the fitted tokens so every expert counts as if equally popular"
        " (0: the sample as it is; 1: fully flat), for a layout meant for another workload.",
        "", 0, 1)

    def __post_init__(self) -> None:
        check_options(self, "solver")
