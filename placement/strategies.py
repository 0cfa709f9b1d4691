"""Every strategy by name, one signature: (PlacementProblem, SolverOptions) -> PlacementResult."""

from __future__ import annotations

from collections.abc import Callable

from placement.baselines import contiguous, greedy, random_layout, round_robin
from placement.bottleneck import ilp_bottleneck
from placement.dedup.solve import dedup, dedup_bytes
from placement.eplb import eplb
from placement.ilp import ilp_bytes, ilp_load, ilp_origin, ilp_uniform
from placement.problem import PlacementProblem, PlacementResult, SolverOptions
from traces.infra.errors import InputError

Strategy = Callable[[PlacementProblem, SolverOptions], PlacementResult]

STRATEGIES: dict[str, Strategy] = {
    "contiguous": contiguous,
    "round-robin": round_robin,
    "random": random_layout,
    "greedy": greedy,
    "eplb": eplb,
    "ilp": ilp_uniform,
    "ilp-load": ilp_load,
    "ilp-origin": ilp_origin,
    "ilp-bytes": ilp_bytes,
    "ilp-bottleneck": ilp_bottleneck,
    "dedup": dedup,
    "dedup-bytes": dedup_bytes,
}
# Strategies fitted on per-token routing (``PlacementProblem.token_sample``), not on counts.
SAMPLE_STRATEGIES = frozenset({"dedup", "dedup-bytes"})


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
