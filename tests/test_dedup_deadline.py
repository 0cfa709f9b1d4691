"""``dedup`` keeps its time limit: no search step after the searches' share, no bound LP or
ablation after the whole limit.  Time is a clock that ticks once per reading (counting work),
so nothing here depends on the machine's speed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from placement import SolverOptions, check_layout
from placement.dedup import sample_bound, solve
from placement.dedup.deadline import SEARCH_SHARE
from placement.dedup.state import LayerState
from tests.test_placement_dedup import _problem


class TickClock:
    """Advances by one per reading; ``now`` is the last reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _instance(seed: int, layers: int = 6, tokens: int = 200):
    rng = np.random.default_rng(seed)
    experts = np.stack([[rng.choice(16, 4, replace=False) for _ in range(layers)]
                        for _ in range(tokens)])
    return experts, rng.integers(0, 4, tokens)


def _watch(monkeypatch, clock: TickClock) -> list[tuple[str, float]]:
    """Record (phase, clock) of every search step, bound LP and ablation call."""
    calls: list[tuple[str, float]] = []

    def spy(owner, name: str, phase: str) -> None:
        real = getattr(owner, name)

        def wrapped(*a, **k):
            calls.append((phase, clock.now))
            return real(*a, **k)
        monkeypatch.setattr(owner, name, wrapped)

    for name in ("move_deltas", "swap_delta", "replica_deltas", "replica_delta"):
        spy(LayerState, name, "search")
    spy(sample_bound, "transport_bound", "bound")
    spy(sample_bound, "replica_bound", "bound")
    spy(solve, "ablation", "ablation")
    return calls


@pytest.mark.parametrize("redundant", [0, 4])
@pytest.mark.parametrize("limit", [0.5, 3.0, 40.0, 400.0, 1e6])
def test_no_work_after_the_deadline(monkeypatch, limit, redundant):
    experts, origins = _instance(3)
    p = _problem(experts, origins, gpus_per_server=2, servers=2, redundant=redundant)
    clock = TickClock()
    calls = _watch(monkeypatch, clock)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=limit, seed=0), "dedup", "hops",
                            clock=clock)
    start = 1.0  # the solve's first reading starts its time
    search_end, end = start + SEARCH_SHARE * limit, start + limit
    late = [(ph, t) for ph, t in calls
            if t > (search_end if ph == "search" else end)]
    assert late == []  # every call was made while its phase still had time
    assert res.is_ok and check_layout(p, res.layout) == []
    info = res.info
    cut = info["layers_cut_by_time_limit"]
    if limit == 0.5:  # over after the first reading: nothing searched
        assert cut == list(range(6)) and not any(ph == "search" for ph, _ in calls)
        assert math.isnan(res.solver.dual_bound) and "not computed" in info["bound_kind"]
        assert info["ablation"] == "not computed (time limit)"
    if limit == 1e6:
        assert cut == [] and not info["stopped_by_time_limit"]
        assert res.solver.dual_bound <= res.solver.objective + 1e-9
        assert isinstance(info["ablation"], dict)
    if cut:  # layers the limit reached are unsearched, and the result says it stopped
        assert info["stopped_by_time_limit"]
        assert res.solver.termination.value == "time-limit"


def test_unsearched_layers_take_the_cheaper_of_eplb_and_the_group_start(monkeypatch):
    """R1-like groups (4 groups of 4, tokens inside one group): with no time left, each layer
    is EPLB's or the group start, whichever costs less on the sample, never worse than both."""
    rng = np.random.default_rng(5)
    group = rng.integers(4, size=120)  # each token's group, the same in every layer
    experts = np.stack([[4 * g + rng.choice(4, 2, replace=False) for _ in range(3)]
                        for g in group])
    origins = 2 * (group // 2) + rng.integers(2, size=120)  # groups 0, 1 start on server 0
    p = _problem(experts, origins, gpus_per_server=2, servers=2, groups=4)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=0.5), "dedup", "hops",
                            clock=TickClock())
    assert res.info["layers_cut_by_time_limit"] == [0, 1, 2]
    ref = solve.eplb(p, SolverOptions())
    assert res.solver.objective <= solve.dedup_cost(p, ref.layout).cost_per_token + 1e-9
    # whole groups per server: every token (one group) uses one server, at most one remote
    hosts = res.layout.expert_gpus[:, :, 0][np.arange(3)[None, :, None], experts] // 2
    assert (hosts == hosts[..., :1]).all()
    # groups 0, 1 on server 0 and 2, 3 on server 1 (where their tokens start): nothing remote,
    # while EPLB (groups packed by load: 2.75 round-trip hops per token) loses
    assert res.solver.objective == 0.0 < solve.dedup_cost(p, ref.layout).cost_per_token
    assert set(res.info["starts_won"]) == {"groups (time limit)"}
