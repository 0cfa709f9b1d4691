"""The straggler trade without replicas (``placement.dedup.trade``): the searched layers stand
only when their copy saving is worth the rise of their busiest GPUs; otherwise no layer ends
above EPLB's busiest GPU or busiest server endpoint, nor costs more than EPLB's layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import SolverOptions, check_layout
from placement.dedup import solve
from placement.dedup.evaluate import dedup_cost, layer_gpu_loads, remote_servers
from placement.dedup.layers import LayerChoice
from placement.dedup.trade import TRADE_RATE, busiest_endpoint, busiest_gpu, straggler_trade
from tests.test_placement_dedup import _problem


def _layers(costs):
    return [LayerChoice([], c, c, c, "searched") for c in costs]


def test_hand_computed_trade():
    # EPLB's layers cost 10 + 10, the searched 9 + 10: saving 1 - 19/20 = 5 %.  Busiest GPUs
    # 12 + 10 against EPLB's 10 + 10: rise 22/20 - 1 = 10 %.  5 % >= 0.5 x 10 %: kept; with
    # busiest 14 + 10 the rise is 20 % and 5 % < 10 %: not kept.
    assert TRADE_RATE == 0.5
    ref_cost, ref_busy = np.array([10.0, 10.0]), np.array([10.0, 10.0])
    t = straggler_trade(_layers([9.0, 10.0]), np.array([12.0, 10.0]), ref_cost, ref_busy)
    assert (round(t.saving, 9), round(t.rise, 9), t.worth_it) == (0.05, 0.1, True)
    t = straggler_trade(_layers([9.0, 10.0]), np.array([14.0, 10.0]), ref_cost, ref_busy)
    assert (round(t.rise, 9), t.worth_it) == (0.2, False)
    t = straggler_trade(_layers([11.0, 10.0]), np.array([9.0, 10.0]), ref_cost, ref_busy)
    assert t.worth_it  # no rise: nothing is traded


def test_busiest_gpu_counts_routes():
    # tokens {0,1}, {0,2}: expert 0 has 2 routes, 1 and 2 one each; 0 and 1 on GPU 0 -> 3
    x = np.array([[0, 1], [0, 2]])
    assert busiest_gpu(2, x, [(0, 0), (1, 0), (2, 1)]) == 3.0


def _hot_pairs(seed: int, tokens: int = 160, layers: int = 2):
    """6 groups of 4 experts; most tokens take the hot groups 0 and 1 together, so putting
    them on one server saves copies and loads that server."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(tokens):
        row = []
        for _ in range(layers):
            gs = [0, 1] if rng.random() < 0.6 else rng.choice(6, 2, replace=False)
            row.append(np.concatenate([4 * g + rng.choice(4, 2, replace=False) for g in gs]))
        rows.append(row)
    return np.array(rows), rng.integers(0, 6, tokens)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_the_trade_keeps_every_layer_within_eplb(seed):
    experts, origins = _hot_pairs(seed)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=1e6, seed=0), "dedup", "hops")
    assert res.is_ok and check_layout(p, res.layout) == []
    assert "straggler_trade" in res.info
    ref = solve.eplb(p, SolverOptions()).layout
    got, ref_cost = dedup_cost(p, res.layout).layer_cost, dedup_cost(p, ref).layer_cost
    assert (got <= ref_cost + 1e-9).all()
    busy = layer_gpu_loads(p, res.layout).max(axis=1)
    if "not kept" in str(res.info["straggler_trade"]):
        assert (busy <= layer_gpu_loads(p, ref).max(axis=1) + 1e-9).all()
    # EPLB's servers: EPLB's GPUs (``anchor``); when the trade binds, no layer's busiest
    # server endpoint above EPLB's
    sample = p.token_sample
    assert sample is not None
    o = sample.origin_gpu.astype(np.int64)
    for li in range(p.num_layers):
        x = sample.experts[:, li].astype(np.int64)
        mine, theirs = res.layout.expert_gpus[li], ref.expert_gpus[li]
        if "not kept" in str(res.info["straggler_trade"]):
            assert (busiest_endpoint(remote_servers(p, x, o, mine)[0], p.gpu_server[o])
                    <= busiest_endpoint(remote_servers(p, x, o, theirs)[0], p.gpu_server[o]))
        if (p.gpu_server[mine[:, 0]] == p.gpu_server[theirs[:, 0]]).all():
            assert (mine[:, 0] == theirs[:, 0]).all()


@pytest.mark.parametrize("redundant", [0, 6])
def test_the_trade_is_only_without_replicas_and_guard(redundant):
    experts, origins = _hot_pairs(1)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6, redundant=redundant)
    res = solve.solve_dedup(p, SolverOptions(time_limit_s=1e6, seed=0), "dedup", "hops")
    assert ("straggler_trade" in res.info) == (redundant == 0)
