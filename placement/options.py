"""Solver options (HiGHS), apart from the problem so that the command line reads their
defaults without importing pandas or HiGHS."""

from __future__ import annotations

from dataclasses import dataclass, field

from traces.infra.errors import InputError


@dataclass(frozen=True, slots=True)
class SolverOptions:
    """HiGHS options, recorded with every result."""

    time_limit_s: float = field(default=60.0, metadata={"help": "Solver time limit."})
    mip_rel_gap: float = field(  # HiGHS's own default
        default=1e-4, metadata={"help": "Relative MIP gap to stop at."}
    )
    threads: int = field(default=1, metadata={"help": "HiGHS threads."})
    seed: int = field(default=0, metadata={"help": "HiGHS random_seed (and baseline rng)."})

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise InputError("solver: time_limit_s must be > 0")
        if not 0 <= self.mip_rel_gap < 1:
            raise InputError("solver: mip_rel_gap must be in [0, 1)")
        if self.threads < 1:
            raise InputError("solver: threads must be >= 1")
        if not 0 <= self.seed <= 2**31 - 1:
            raise InputError(f"solver: seed must be in 0..2147483647, got {self.seed}")
