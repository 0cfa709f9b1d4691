"""The busiest-link decomposition (placement.load_polytope) against brute force and HiGHS.

Tiny instances enumerate every layout that respects the per-layer caps; properties: the
Dantzig-Wolfe bound <= the master's LP value <= the best layout <= the layout built, and the
master's value equals the LP relaxation of the full model solved by HiGHS.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import SolverOptions
from placement.load_polytope import (
    LoadPolytope,
    layout_from_columns,
    layout_near,
    refine_swaps,
    solve_master,
)
from placement.lp import Model, run_highs


def _layouts(L: int, E: int, cap: np.ndarray):
    """Every server-per-expert [L, E] with at most cap[b] experts of a layer on server b."""
    S = len(cap)
    per_layer = [
        np.array(a) for a in itertools.product(range(S), repeat=E)
        if (np.bincount(a, minlength=S) <= cap).all()
    ]
    for combo in itertools.product(per_layer, repeat=L):
        yield np.stack(combo)


def _loads(act: np.ndarray, server: np.ndarray, S: int) -> np.ndarray:
    return np.bincount(server.ravel(), weights=act.ravel(), minlength=S)


def test_cheapest_vertex_hand_computed():
    # Two layers, 3 experts, servers with 2 and 1 slots per layer.  Layer weights sorted
    # descending: (0.5, 0.3, 0.2) and (0.6, 0.3, 0.1): ranked = (1.1, 0.6, 0.3).  With
    # c = (2, 1), server 1 is cheapest: it takes rank 0 (1.1), server 0 ranks 1-2 (0.9).
    poly = LoadPolytope.of(np.array([[0.2, 0.5, 0.3], [0.3, 0.1, 0.6]]), np.array([2, 1]))
    assert poly.cheapest(np.array([2.0, 1.0])) == pytest.approx([0.9, 1.1])
    assert poly.cheapest(np.array([1.0, 2.0])) == pytest.approx([1.7, 0.3])


instances = st.tuples(
    st.integers(0, 10_000), st.integers(1, 2), st.integers(2, 4), st.integers(2, 3),
    st.integers(1, 4),
)


def _instance(seed: int, L: int, E: int, S: int, ne: int):
    rng = np.random.default_rng(seed)
    act = rng.dirichlet(np.ones(E), size=L) * 2
    cap = rng.integers(1, E + 1, size=S)
    while cap.sum() < E:  # every layer must fit
        cap[rng.integers(S)] += 1
    B = rng.uniform(0.0, 1.0, size=(S, ne))
    B[rng.integers(S), rng.integers(ne)] = 1.0
    return act, cap, B


@settings(max_examples=40, deadline=None)
@given(instances)
def test_bound_below_the_best_layout_and_the_built_one_above(params):
    seed, L, E, S, ne = params
    act, cap, B = _instance(seed, L, E, S, ne)
    total = np.full(S, L * E)  # never binding
    best = min(float((_loads(act, x, S) @ B).max()) for x in _layouts(L, E, cap))
    poly = LoadPolytope.of(act, cap)
    m = solve_master(poly, time.perf_counter() + 30, B=B)
    assert m.converged
    assert m.bound <= m.master_value * (1 + 1e-9) + 1e-12
    assert m.master_value <= best * (1 + 1e-9) + 1e-12  # the LP relaxation is below
    assert m.target.sum() == pytest.approx(act.sum())
    for near in (layout_from_columns(act, cap, total, m), layout_near(act, cap, total, m.target)):
        assert near is not None
        server, _ = refine_swaps(act, near, cap, total, m.target, time.perf_counter() + 30,
                                 lambda P: False)
        assert all((np.bincount(server[li], minlength=S) <= cap).all() for li in range(L))
        assert server.shape == (L, E)
        assert float((_loads(act, server, S) @ B).max()) >= best * (1 - 1e-9)


def _full_lp(act: np.ndarray, cap: np.ndarray, B: np.ndarray) -> float:
    """The LP relaxation of the per-expert model: x[l, i, b] in [0, 1], sum_b x = 1,
    per-layer caps, t >= sum_b B[b, e] sum_{l,i} p x for every link."""
    L, E = act.shape
    S, ne = B.shape
    m = Model()
    x = m.add_cols(np.zeros(L * E * S), 0.0, 1.0) + np.arange(L * E * S)
    t = m.add_cols(np.ones(1), 0.0, np.inf)
    li, i, b = np.unravel_index(np.arange(L * E * S), (L, E, S))
    r = m.add_rows("assign", 1.0, 1.0, L * E)
    m.add_entries(r + li * E + i, x, 1.0)
    r = m.add_rows("cap_layer", 0.0, np.tile(cap, L).astype(float), L * S)
    m.add_entries(r + li * S + b, x, 1.0)
    r = m.add_rows("link", -np.inf, 0.0, ne)
    for e in range(ne):
        m.add_entries(np.full(L * E * S, r + e), x, act[li, i] * B[b, e])
    m.add_entries(r + np.arange(ne), np.full(ne, t), -1.0)
    sol = run_highs(m, SolverOptions(time_limit_s=30), integer=False)
    return sol.outcome.objective


@settings(max_examples=15, deadline=None)
@given(st.tuples(st.integers(0, 10_000), st.integers(1, 4), st.integers(3, 8),
                 st.integers(2, 5), st.integers(1, 6)))
def test_master_value_is_the_lp_relaxation(params):
    # Larger than brute force allows: the master converges to HiGHS' LP of the full model.
    act, cap, B = _instance(*params)
    m = solve_master(LoadPolytope.of(act, cap), time.perf_counter() + 30, B=B)
    assert m.converged
    assert m.master_value == pytest.approx(_full_lp(act, cap, B), rel=1e-4)
    assert m.bound == pytest.approx(m.master_value, rel=1e-4)


def test_free_slots_and_a_binding_total_are_respected():
    # 3 servers with 2 slots per layer but 3 in total: 2 layers x 3 experts = 6 = 3 x 2 slots
    # per layer would allow 4 per server; the totals allow 3, so every server holds exactly 3.
    rng = np.random.default_rng(0)
    act = rng.dirichlet(np.ones(3), size=2)
    cap, total = np.array([2, 2, 2]), np.array([3, 3, 3])
    B = rng.uniform(size=(3, 4))
    m = solve_master(LoadPolytope.of(act, cap), time.perf_counter() + 30, B=B)
    near = layout_from_columns(act, cap, total, m)
    if near is None:
        near = layout_near(act, cap, total, m.target)
    assert near is not None
    server, _ = refine_swaps(act, near, cap, total, m.target, time.perf_counter() + 30,
                             lambda P: False)
    assert (np.bincount(server.ravel(), minlength=3) <= total).all()
    best = min(float((_loads(act, x, 3) @ B).max()) for x in _layouts(2, 3, cap)
               if (np.bincount(x.ravel(), minlength=3) <= total).all())
    assert m.bound <= best * (1 + 1e-9)  # relaxing cap_total keeps the bound valid
