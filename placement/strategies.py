"""Every strategy by name, one signature: (PlacementProblem, SolverOptions) -> PlacementResult."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from traces.infra.errors import InputError

if TYPE_CHECKING:
    from placement.problem import PlacementProblem, PlacementResult, SolverOptions

Strategy = Callable[["PlacementProblem", "SolverOptions"], "PlacementResult"]

# name -> (module, function); a strategy's module (HiGHS for the ILPs) is imported when the
# strategy is first looked up, so that listing the names (``--help``) imports no solver.
_WHERE: dict[str, tuple[str, str]] = {
    "contiguous": ("placement.baselines", "contiguous"),
    "round-robin": ("placement.baselines", "round_robin"),
    "random": ("placement.baselines", "random_layout"),
    "greedy": ("placement.baselines", "greedy"),
    "eplb": ("placement.eplb", "eplb"),
    "ilp": ("placement.ilp", "ilp_uniform"),
    "ilp-load": ("placement.ilp", "ilp_load"),
    "ilp-origin": ("placement.ilp", "ilp_origin"),
    "ilp-bytes": ("placement.ilp", "ilp_bytes"),
    "ilp-bottleneck": ("placement.bottleneck", "ilp_bottleneck"),
    "dedup": ("placement.dedup.solve", "dedup"),
    "dedup-bytes": ("placement.dedup.solve", "dedup_bytes"),
}
# Strategies fitted on per-token routing (``PlacementProblem.token_sample``), not on counts.
SAMPLE_STRATEGIES = frozenset({"dedup", "dedup-bytes"})
# Strategies that solve (HiGHS or dedup's local search) until SolverOptions.time_limit_s.
TIME_LIMITED = frozenset(name for name in _WHERE if name.startswith(("ilp", "dedup")))
# Strategies with a migration-aware re-placement (a price on or a budget of weight bytes moved):
# the assignment ILPs (placement.migration), dedup's swap search and walk
# (placement.migration_dedup) and EPLB's fewest-moves MIP (placement.migration_eplb).
MIGRATION_AWARE = frozenset({"ilp", "ilp-load", "ilp-origin", "dedup", "dedup-bytes", "eplb"})


class _Strategies(Mapping[str, Strategy]):
    """Every strategy by name; the function is imported on first access."""

    def __getitem__(self, name: str) -> Strategy:
        module, function = _WHERE[name]
        fn: Strategy = getattr(importlib.import_module(module), function)
        return fn

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


STRATEGIES: Mapping[str, Strategy] = _Strategies()


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


# The cluster arrays of a problem that depend on its links (the rest depend on its GPUs and
# servers only) and those each strategy's layout depends on; a strategy not listed depends on
# all.  A layout stays optimal after a link failure that changes none of them (the failure
# study reuses it); tests/test_failures_study.py perturbs the others and checks the layout.
NETWORK_ARRAYS = ("distance", "pair_seconds_per_byte", "server_link_incidence",
                  "link_bandwidth_bytes_per_s")
READS_NETWORK: dict[str, frozenset[str]] = {
    **{name: frozenset() for name in ("contiguous", "round-robin", "random", "eplb")},
    **{name: frozenset({"distance"}) for name in ("greedy", "ilp", "ilp-load", "ilp-origin",
                                                   "dedup")},
    **{name: frozenset({"distance", "pair_seconds_per_byte"}) for name in ("ilp-bytes",
                                                                          "dedup-bytes")},
}
# Strategies whose cost is linear in distance and wire time, solved exactly: on the mean
# arrays over a failure set they minimise the expected cost (``place --robust``).
ROBUST_STRATEGIES = frozenset({"ilp", "ilp-load", "ilp-origin", "ilp-bytes"})


def network_reads(strategy: str) -> frozenset[str]:
    return READS_NETWORK.get(strategy, frozenset(NETWORK_ARRAYS))


def check_supported(problem: PlacementProblem, strategy: str) -> None:
    """Refuse options the strategy would ignore (``--replicas``, ``--balance-eps``)."""
    asked = {"replicas": problem.num_redundant > 0, "balance": problem.balance_eps is not None}
    flags = {"replicas": "--replicas (strategy.replicas)",
             "balance": "--balance-eps (strategy.balance_eps)"}
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
    from placement.options import SolverOptions

    check_supported(problem, strategy)
    options = options or SolverOptions()
    if options.flatten_popularity and strategy not in SAMPLE_STRATEGIES:
        raise InputError(
            f"placement: strategy {strategy} does not use --flatten-popularity"
            f" (options.flatten_popularity); drop it or use one of"
            f" {', '.join(sorted(SAMPLE_STRATEGIES))}"
        )
    return fn(problem, options)
