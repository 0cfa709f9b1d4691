"""``dedup`` never ends a layer worse than what it could have taken unsearched: every layer,
searched or cut by the time limit, costs at most the cheapest of EPLB's layer, round-robin's
and contiguous's on the fitting sample (within the balance guard); each layer's search gets an
even share of the time left; the routing-group start where groups and servers do not divide."""

from __future__ import annotations

import numpy as np
import pytest

from placement import SolverOptions, check_layout
from placement.baselines import contiguous_gpus, round_robin_gpus
from placement.dedup import solve
from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import dedup_cost, layer_gpu_loads
from placement.dedup.start import group_start
from placement.problem import ExpertLayout
from tests.test_dedup_deadline import TickClock
from tests.test_placement_dedup import _problem


def _grouped_instance(seed: int, layers: int = 3, tokens: int = 150):
    """6 groups of 4 experts, every token inside 2 groups (R1-like), origins at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(tokens):
        gs = rng.choice(6, 2, replace=False)
        rows.append([np.concatenate([4 * g + rng.choice(4, 2, replace=False) for g in gs])
                     for _ in range(layers)])
    return np.array(rows), rng.integers(0, 6, tokens)


@pytest.mark.parametrize("limit", [0.5, 1e6])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_layer_costs_more_than_the_baselines(limit, seed):
    """No replicas (no guard): per layer at most min(eplb, round-robin, contiguous); a layer
    the straggler trade changed at most EPLB's (the others may be above its busiest GPU)."""
    experts, origins = _grouped_instance(seed)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=limit, seed=0), "dedup", "hops",
                            clock=TickClock())
    assert res.is_ok and check_layout(p, res.layout) == []
    got = dedup_cost(p, res.layout).layer_cost
    L, E, G = p.num_layers, p.num_experts, p.num_gpus
    others = [solve.eplb(p, SolverOptions()).layout,
              ExpertLayout.from_primary(round_robin_gpus(L, E, G), G),
              ExpertLayout.from_primary(contiguous_gpus(L, E, G), G)]
    best = np.min([dedup_cost(p, lay).layer_cost for lay in others], axis=0)
    traded = res.info["layers_balanced_by_trade"]
    best[traded] = dedup_cost(p, others[0]).layer_cost[traded]
    assert (got <= best + 1e-9).all()
    if limit == 0.5:
        assert res.info["layers_cut_by_time_limit"] == [0, 1, 2]


@pytest.mark.parametrize("limit", [0.5, 1e6])
def test_with_replicas_every_layer_keeps_the_guard_and_beats_eplb(limit):
    experts, origins = _grouped_instance(2)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6, redundant=6)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=limit, seed=0), "dedup", "hops",
                            clock=TickClock())
    assert res.is_ok and check_layout(p, res.layout) == []
    ref = solve.eplb(p, SolverOptions()).layout
    assert (dedup_cost(p, res.layout).layer_cost <= dedup_cost(p, ref).layer_cost + 1e-9).all()
    busiest = layer_gpu_loads(p, res.layout).max(axis=1)
    cap = (1 + solve.BALANCE_SLACK) * layer_gpu_loads(p, ref).max(axis=1)
    assert (busiest <= cap + 1e-9).all() and res.info["layers_missing_balance"] == []


def test_share_splits_the_search_time_left_evenly():
    # searches end at 8; now is 2: 6 time units left over 3 parts, this part ends at 2 + 2
    d = Deadline(start_s=0.0, end_s=10.0, search_end_s=8.0, clock=lambda: 2.0)
    part = d.share(3)
    assert part.search_end_s == 4.0 and part.end_s == 10.0
    assert d.share(1).search_end_s == 8.0
    late = Deadline(0.0, 10.0, 8.0, clock=lambda: 9.0)  # past the searches' end: nothing left
    assert late.share(2).search_passed()


def test_every_layer_gets_a_share_of_a_short_limit():
    """400 readings for 6 layers (a layer's starts read the clock a few dozen times): every
    layer is searched; before the shares the first layer took it all (layers 1-5 were cut)."""
    from tests.test_dedup_deadline import _instance

    experts, origins = _instance(3)
    p = _problem(experts, origins, gpus_per_server=2, servers=2)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=400.0, seed=0), "dedup", "hops",
                            clock=TickClock())
    assert res.info["layers_cut_by_time_limit"] == []


@pytest.mark.parametrize("caps", [[4, 4, 4], [5, 4, 3], [3, 3, 3, 3], [6, 6]])
def test_group_start_where_groups_and_servers_do_not_divide(caps):
    """4 groups of 3 experts: each server gets its cap; every group lies on consecutive
    servers (of the fill order), at most as many as it needs plus one."""
    rng = np.random.default_rng(0)
    g = rng.integers(4, size=60)
    experts = np.stack([3 * gi + rng.choice(3, 2, replace=False) for gi in g])
    caps_a = np.array(caps)
    srv = group_start(experts, rng.integers(0, len(caps), 60), 12, 4, caps_a)
    assert srv is not None
    assert np.bincount(srv, minlength=len(caps)).tolist() == caps
    for gi in range(4):
        on = np.unique(srv[3 * gi:3 * gi + 3])
        assert on.max() - on.min() == len(on) - 1  # consecutive servers
        assert len(on) <= -(-3 // min(caps)) + 1
