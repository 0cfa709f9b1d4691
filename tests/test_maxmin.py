"""Max-min fair rates (simulator.maxmin): classic hand cases, an LP cross-check, properties."""

from __future__ import annotations

import highspy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.maxmin import max_min_rates


def _rates(paths: list[list[tuple[int, float]]], capacity: list[float], tol: float = 0.0):
    flow = np.array([f for f, p in enumerate(paths) for _ in p], dtype=np.int64)
    link = np.array([lk for p in paths for lk, _ in p], dtype=np.int64)
    share = np.array([w for p in paths for _, w in p])
    return max_min_rates(flow, link, share, np.array(capacity, dtype=float), len(paths), tol)


def test_two_flows_sharing_one_link_get_half_each():
    # one link of 10 B/s, two flows on it: 10 / 2 = 5 each
    np.testing.assert_allclose(_rates([[(0, 1.0)], [(0, 1.0)]], [10.0]), [5.0, 5.0])


def test_a_flow_bottlenecked_elsewhere_leaves_the_rest_to_the_other():
    # link 0 (10 B/s) carries flows a and b; b also crosses link 1 (2 B/s).
    # Filling: at level 2 link 1 is full, b freezes at 2; a goes on alone: 10 - 2 = 8.
    np.testing.assert_allclose(_rates([[(0, 1.0)], [(0, 1.0), (1, 1.0)]], [10.0, 2.0]),
                               [8.0, 2.0])


def test_line_network_textbook_case():
    # links L0, L1 of 1 B/s; flow 0 crosses both, flows 1 and 2 only L0, flow 3 only L1.
    # L0 (three flows) fills first at 1/3: flows 0, 1, 2 = 1/3; L1 has 1 - 1/3 = 2/3 left,
    # all of it for flow 3.
    rates = _rates([[(0, 1.0), (1, 1.0)], [(0, 1.0)], [(0, 1.0)], [(1, 1.0)]], [1.0, 1.0])
    np.testing.assert_allclose(rates, [1 / 3, 1 / 3, 1 / 3, 2 / 3])


def test_a_sprayed_flow_uses_its_share_of_each_link():
    # one flow split evenly over two parallel links of 1 B/s: 0.5 r <= 1 on each -> r = 2;
    # a second flow alone on link 0 then shares it: 0.5 r + s <= 1 with r = s -> 2/3 each,
    # and link 1 (0.5 x 2/3 used) is not full, but the split flow cannot use it alone.
    np.testing.assert_allclose(_rates([[(0, 0.5), (1, 0.5)]], [1.0, 1.0]), [2.0])
    np.testing.assert_allclose(_rates([[(0, 0.5), (1, 0.5)], [(0, 1.0)]], [1.0, 1.0]),
                               [2 / 3, 2 / 3])


def _lp_max_min(paths: list[list[tuple[int, float]]], capacity: list[float]) -> np.ndarray:
    """Max-min fairness by successive LPs (independent of progressive filling): maximise the
    smallest rate of the unfixed flows; fix those that cannot exceed it; repeat."""
    fixed = np.full(len(paths), np.nan)
    while np.isnan(fixed).any():
        t = _lp(paths, capacity, fixed, objective=None)
        for f in np.flatnonzero(np.isnan(fixed)):
            if _lp(paths, capacity, fixed, objective=f, floor=t) <= t * (1 + 1e-7) + 1e-9:
                fixed[f] = t
    return fixed


def _lp(paths, capacity, fixed, objective, floor=0.0) -> float:
    """objective None: max t with every unfixed rate >= t; else max rate[objective] with
    every unfixed rate >= floor."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    n = len(paths)
    for f in range(n):
        lo = hi = fixed[f] if not np.isnan(fixed[f]) else None
        h.addVar(lo if lo is not None else 0.0, hi if hi is not None else highspy.kHighsInf)
    h.addVar(0.0, highspy.kHighsInf)  # t
    for lk, cap in enumerate(capacity):
        idx = [f for f, p in enumerate(paths) for x, _ in p if x == lk]
        val = [w for p in paths for x, w in p if x == lk]
        if idx:
            h.addRow(-highspy.kHighsInf, cap, len(idx), np.array(idx, dtype=np.int32),
                     np.array(val))
    for f in np.flatnonzero(np.isnan(fixed)):
        if objective is None:  # r_f - t >= 0
            h.addRow(0.0, highspy.kHighsInf, 2, np.array([f, n], dtype=np.int32),
                     np.array([1.0, -1.0]))
        else:
            h.changeColBounds(int(f), floor, highspy.kHighsInf)
    col = n if objective is None else int(objective)
    h.changeColCost(col, -1.0)
    h.run()
    return float(h.getSolution().col_value[col])


@st.composite
def _networks(draw):
    m = draw(st.integers(1, 4))
    capacity = [draw(st.sampled_from([1.0, 2.0, 3.0, 5.0])) for _ in range(m)]
    n = draw(st.integers(1, 5))
    paths = []
    for _ in range(n):
        links = draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=m, unique=True))
        paths.append([(lk, draw(st.sampled_from([1.0, 0.5, 0.25]))) for lk in links])
    return paths, capacity


@settings(max_examples=40, deadline=None)
@given(_networks())
def test_progressive_filling_equals_the_lp_definition(net):
    paths, capacity = net
    np.testing.assert_allclose(_rates(paths, capacity), _lp_max_min(paths, capacity),
                               rtol=1e-6, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(_networks(), st.sampled_from([0.0, 0.01, 0.1]))
def test_rates_are_feasible_and_every_flow_has_a_bottleneck(net, tol):
    # Max-min fair <=> feasible and every flow crosses a full link on which no flow is
    # faster (its bottleneck).  With a tolerance the rates stay feasible, and every flow
    # crosses a link within that margin of full where no flow is faster by more.
    paths, capacity = net
    rates = _rates(paths, capacity, tol)
    load = np.zeros(len(capacity))
    for f, p in enumerate(paths):
        for lk, w in p:
            load[lk] += w * rates[f]
    assert (load <= np.array(capacity) * (1 + 1e-9)).all()
    for f, p in enumerate(paths):
        ok = False
        for lk, _ in p:
            full = load[lk] >= capacity[lk] * (1 - tol) / (1 + tol) - 1e-9
            fastest = max(rates[g] for g, q in enumerate(paths) if any(x == lk for x, _ in q))
            ok |= full and rates[f] >= fastest / (1 + tol) - 1e-9
        assert ok, (f, rates, load)


def test_no_flows():
    assert max_min_rates(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                         np.zeros(0), np.ones(3), 0).size == 0


@pytest.mark.parametrize("tol", [0.0, 0.05])
def test_many_equal_flows_take_one_round(tol):
    # 1000 flows on one 1 GB/s link: 1 MB/s each
    n = 1000
    rates = max_min_rates(np.arange(n), np.zeros(n, dtype=np.int64), np.ones(n),
                          np.array([1e9]), n, tol)
    np.testing.assert_allclose(rates, 1e6)
