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


# What each strategy honours besides the slots: a problem asking for more is refused, never
# silently solved without it.
SUPPORTS: dict[str, frozenset[str]] = {
    **{name: frozenset() for name in ("contiguous", "round-robin", "random", "greedy",
                                      "ilp-bottleneck")},
    "eplb": frozenset({"replicas"}),
    **{name: frozenset({"replicas", "balance"}) for name in ("ilp", "ilp-load", "ilp-origin",
                                                             "ilp-bytes")},
    **{name: frozenset({"replicas", "balance"}) for name in ("dedup", "dedup-bytes")},
}


def check_supported(problem: PlacementProblem, strategy: str) -> None:
    """Refuse options the strategy would ignore (``--replicas``, ``--balance-eps``)."""
    asked = {"replicas": problem.num_redundant > 0, "balance": problem.balance_eps is not None}
    flags = {"replicas": "--replicas (placer.replicas)",
             "balance": "--balance-eps (placer.balance_eps)"}
    for what, given in asked.items():
        if given and what not in SUPPORTS.get(strategy, frozenset()):
            able = sorted(s for s, sup in SUPPORTS.items() if what in sup)
            raise InputError(
                f"placement: strategy {strategy} does not support {flags[what]}; drop it or use"
                f" one of {', '.join(able)}"
            )


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
    check_supported(problem, strategy)
    return fn(problem, options or SolverOptions())
