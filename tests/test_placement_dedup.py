"""``dedup``: hand-computed costs, brute force on tiny layers, bounds, incremental deltas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import (
    ExpertLayout,
    PlacementProblem,
    SolverOptions,
    SolveStatus,
    check_layout,
    expected_cost,
    solve_placement,
)
from placement.dedup.bound import (
    exact_layer,
    layouts_count,
    replica_bound,
    server_assignments,
    transport_bound,
)
from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import dedup_cost
from placement.dedup.search import swap_search
from placement.dedup.state import LayerState
from placement.token_sample import TokenSample

OPTS = SolverOptions(time_limit_s=20, seed=1)


def _problem(experts, origins, gpus_per_server=1, servers=2, redundant=0, groups=1,
             distance=None):
    """Servers of ``gpus_per_server`` GPUs; 0 hops inside a server, 1 between servers."""
    experts = np.asarray(experts, dtype=np.int64)
    T, L, k = experts.shape
    E = int(experts.max()) + 1 if groups == 1 else groups * (-(-int(experts.max() + 1) // groups))
    G = servers * gpus_per_server
    gs = np.repeat(np.arange(servers), gpus_per_server)
    d = (gs[:, None] != gs[None, :]).astype(float) if distance is None else distance
    per = -(-(E + redundant) // G)
    act = np.zeros((L, E))
    for li in range(L):
        act[li] = np.bincount(experts[:, li].ravel(), minlength=E) / T
    return PlacementProblem(
        distance=d, gpu_server=gs, activation=act, slots_per_gpu=L * per,
        max_per_gpu_per_layer=per, num_redundant=redundant, expert_groups=groups,
        token_sample=TokenSample(experts, np.asarray(origins, dtype=np.int64)),
    )


def test_hand_computed_cost_and_optimum():
    # 2 servers of 1 GPU, 1 hop apart (2 hops there and back); experts {0, 1} on server 0 and
    # {2, 3} on server 1.  Tokens (origin server): t0 {0,1} (0): local; t1 {2,3} (1): local;
    # t2 {0,2} (0): server 1 once; t3 {2,3} (0): server 1 once (2 routes, 1 copy).
    # Copies 2 / 4 tokens = 0.5, routes 3 / 4 = 0.75, cost 2 copies x 2 hops / 4 = 1.0.
    experts = [[[0, 1]], [[2, 3]], [[0, 2]], [[2, 3]]]
    p = _problem(experts, [0, 1, 0, 0])
    layout = ExpertLayout(np.array([[[0], [0], [1], [1]]]), 2)
    c = dedup_cost(p, layout)
    assert (c.copies_per_token_layer, c.routes_per_token_layer, c.cost_per_token) == (
        0.5, 0.75, 1.0)
    # Every other split costs more: {0,2}|{1,3} gives 3 copies, {0,3}|{1,2} 4, {2,3}|{0,1} 3.
    # The same four tokens 50 times over (enough routes per expert and server that the search
    # fits all of them; per token the costs are the same):
    p = _problem(experts * 50, [0, 1, 0, 0] * 50)
    res = solve_placement(p, "dedup", OPTS)
    assert res.solver.objective == pytest.approx(1.0)  # the de-duplicated cost
    assert res.solver.dual_bound == pytest.approx(1.0)  # tiny: enumerated exactly
    assert res.status is SolveStatus.OPTIMAL and res.gap == 0.0
    assert res.objective == pytest.approx(expected_cost(p, res.layout))  # the paper's hops
    assert check_layout(p, res.layout) == []


def _random_instance(seed, T=150, E=6, k=2, L=2, servers=2):
    rng = np.random.default_rng(seed)
    experts = np.stack([np.stack([rng.choice(E, k, replace=False) for _ in range(L)])
                        for _ in range(T)])
    return experts, rng.integers(0, servers, T)


def _brute_force(p: PlacementProblem) -> np.ndarray:
    """Optimum of the sample cost over every balanced single-copy layout, per layer."""
    E, S = p.num_experts, p.num_servers
    per = E // S
    out = np.full(p.num_layers, np.inf)
    for li in range(p.num_layers):
        for srv in set(itertools.permutations(np.repeat(np.arange(S), per).tolist())):
            eg = np.zeros((p.num_layers, E, 1), dtype=np.int64)
            eg[li, :, 0] = srv
            out[li] = min(out[li], dedup_cost(p, ExpertLayout(eg, p.num_gpus)).layer_cost[li])
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("servers", [2, 3])
def test_matches_brute_force_and_bounds_hold(seed, servers):
    experts, origins = _random_instance(seed, servers=servers)
    p = _problem(experts, origins, servers=servers)
    per_layer = _brute_force(p)
    best = per_layer.sum()
    res = solve_placement(p, "dedup", OPTS)
    # every layer at the optimum, but those that took EPLB's layer for a busier server
    # endpoint (the straggler trade's, when it binds): at EPLB's cost, never below the optimum
    got = dedup_cost(p, res.layout).layer_cost
    ref = dedup_cost(p, solve_placement(p, "eplb", OPTS).layout).layer_cost
    eplb_layers = res.info["layers_eplb_by_endpoint"]
    assert isinstance(eplb_layers, list)
    for li in range(p.num_layers):
        assert got[li] == pytest.approx(ref[li] if li in eplb_layers else per_layer[li])
    assert res.solver.objective >= best - 1e-9
    assert res.solver.dual_bound <= best + 1e-9
    assert dedup_cost(p, res.layout).cost_per_token == pytest.approx(res.solver.objective)
    # the LP bound alone (what larger layers get) is valid too
    own = origins
    cost = (np.arange(servers)[None, :] != own[:, None]) * 2.0
    lp = sum(transport_bound(experts[:, li], cost, 6, np.full(servers, 6 // servers), OPTS)
             for li in range(2)) / len(origins)
    assert lp <= best + 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_replica_bound_is_below_every_layout_with_replicas(seed):
    # 4 experts, 2 servers of 1 GPU, 2 redundant copies: 3 copies per server per layer.
    experts, origins = _random_instance(seed, T=20, E=4, k=2, L=1)  # few tokens: held out
    p = _problem(experts, origins, redundant=2)
    cost = (np.arange(2)[None, :] != origins[:, None]) * 2.0
    bound = replica_bound(experts[:, 0], cost, origins, 4, 6, 3) / len(origins)
    best = np.inf
    for extra in itertools.combinations(range(8), 2):  # which (expert, server) copies to add
        for prim in set(itertools.permutations([0, 0, 1, 1])):
            eg = np.full((1, 4, 2), -1, dtype=np.int64)
            eg[0, :, 0] = prim
            ok = True
            for x in extra:
                e, s = divmod(x, 2)
                if eg[0, e, 0] == s or eg[0, e, 1] >= 0:
                    ok = False
                    break
                eg[0, e, 1] = s
            if ok and check_layout(p, ExpertLayout(eg, 2)) == []:
                best = min(best, dedup_cost(p, ExpertLayout(eg, 2)).cost_per_token)
    assert bound <= best + 1e-9
    res = solve_placement(p, "dedup", OPTS)
    assert check_layout(p, res.layout) == []
    assert res.info["lower_bound"] <= best + 1e-9 <= res.solver.objective + 1e-9


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4))
def test_incremental_deltas_equal_recounts(seed, servers):
    rng = np.random.default_rng(seed)
    E, T, k = 4 * servers, 30, 3
    x = np.stack([rng.choice(E, k, replace=False) for _ in range(T)])
    own = rng.integers(0, servers, T)
    cost = rng.uniform(1, 3, (T, servers)) * (np.arange(servers)[None, :] != own[:, None])
    near = cost.copy()
    srv = rng.permutation(np.repeat(np.arange(servers), 4))
    s = LayerState(x, cost, near, own, E, srv)
    # every move delta (both formulas: servers <= k and > k) is the exact change of a move
    md = s.move_deltas()
    for e in range(E):
        for dst in range(servers):
            if dst != s.srv[e]:
                assert md[e, dst] == pytest.approx(s.move_delta(e, dst), abs=1e-9)
    a, b = rng.choice(E, 2, replace=False)
    if s.srv[a] != s.srv[b]:
        d = s.swap_delta(int(a), int(b))
        before = s.objective()
        s.apply_swap(int(a), int(b))
        assert s.objective() == pytest.approx(before + d)
    e, dst = int(rng.integers(E)), int(rng.integers(servers))
    if dst not in s.copies[e]:
        d = s.replica_delta(e, dst)
        assert s.replica_deltas()[e, dst] == pytest.approx(d)
        before = s.objective()
        s.apply_replica(e, dst)
        assert s.objective() == pytest.approx(before + d)
    cnt = s.cnt.copy()
    s.recount()
    assert np.array_equal(cnt, s.cnt)
    before = s.objective()
    swap_search(s, s.is_single(), None, Deadline.after(math.inf))
    assert s.objective() <= before + 1e-9


def test_exact_layer_hand_computed():
    # Experts {0,1} co-fire and {2,3} co-fire; origin 0 for all: best {0,1} or {2,3} local.
    x = np.array([[0, 1], [0, 1], [2, 3]])
    cost = np.array([[0.0, 1.0]] * 3)
    val, srv = exact_layer(x, cost, 4, np.array([2, 2]))
    assert val == 1.0 and srv[0] == srv[1] and srv[2] == srv[3]


@pytest.mark.parametrize("caps", [(2, 2), (6, 6), (3, 1, 2), (12, 0)])
def test_server_assignments_lists_every_layout_once(caps):
    # C(4,2) = 6; C(12,6) = 924 (12! = 479,001,600 permutations of the slots, the old way);
    # C(6,3) x C(3,1) = 60; one way to put 12 on one server
    n = sum(caps)
    got = [tuple(a) for a in server_assignments(n, np.array(caps))]
    assert len(got) == len(set(got)) == layouts_count(n, np.array(caps))
    assert all(np.bincount(a, minlength=len(caps)).tolist() == list(caps) for a in got)


def test_refuses_a_problem_without_token_sample():
    from traces.infra.errors import InputError

    p = _problem([[[0, 1]], [[2, 3]]], [0, 1])
    bare = PlacementProblem(
        distance=p.distance, gpu_server=p.gpu_server, activation=p.activation,
        slots_per_gpu=p.slots_per_gpu, max_per_gpu_per_layer=p.max_per_gpu_per_layer,
    )
    with pytest.raises(InputError, match="per-token routing"):
        solve_placement(bare, "dedup", OPTS)


def test_token_sample_origin_beyond_the_cluster_is_refused():
    from traces.infra.errors import InputError

    with pytest.raises(InputError, match="origin GPU 5"):
        _problem([[[0, 1]], [[2, 3]]], [0, 5])
