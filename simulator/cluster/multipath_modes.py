"""The multipath modes of a fabric (how traffic spreads over equal-cost paths): their one
definition and check.  No numpy (the command line's parsers derive flags from it);
:mod:`simulator.cluster.multipath` computes the paths."""

from __future__ import annotations

from traces.infra.errors import InputError

MULTIPATH_MODES: dict[str, str] = {
    "spray": "packet spraying / adaptive routing: even split over equal-cost next hops",
    "ecmp": "per-flow ECMP: flows_per_pair flows per GPU pair, each hashed to one path",
    "hash": "one hashed path per endpoint pair (per-pair ECMP hashing)",
}
DEFAULT_MULTIPATH = "spray"
DEFAULT_FLOWS_PER_PAIR = 4


def check_multipath(mode: str, flows_per_pair: int | None) -> int:
    """Validate a mode and its option; return the flows per pair it uses (1 unless ecmp)."""
    if mode not in MULTIPATH_MODES:
        raise InputError(
            f"unknown multipath mode {mode!r}; choose one of {', '.join(MULTIPATH_MODES)}"
        )
    if mode != "ecmp":
        if flows_per_pair is not None:
            raise InputError(
                f"flows_per_pair applies to multipath mode 'ecmp' only, not {mode!r}"
            )
        return 1
    flows = DEFAULT_FLOWS_PER_PAIR if flows_per_pair is None else flows_per_pair
    if isinstance(flows, bool) or not isinstance(flows, int) or flows < 1:
        raise InputError(f"flows_per_pair must be an integer >= 1, got {flows_per_pair!r}")
    return flows
