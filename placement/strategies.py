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
}


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
    from placement.problem import SolverOptions

    return fn(problem, options or SolverOptions())
