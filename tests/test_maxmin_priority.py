"""Strict-priority max-min (simulator.maxmin.priority_max_min_rates): hand cases and its
definition (each class max-min fair on what the classes before it leave), checked class by
class against plain max-min on the residual capacities."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_maxmin import _lp_max_min, _networks

from simulator.maxmin import (
    max_min_rates,
    priority_max_min_rates,
    priority_max_min_rates_from,
)


def _arrays(paths: list[list[tuple[int, float]]]):
    flow = np.array([f for f, p in enumerate(paths) for _ in p], dtype=np.int64)
    link = np.array([lk for p in paths for lk, _ in p], dtype=np.int64)
    share = np.array([w for p in paths for _, w in p])
    return flow, link, share


def _prio_rates(paths, capacity, priority, tol=0.0):
    return priority_max_min_rates(*_arrays(paths), np.array(capacity, dtype=float), len(paths),
                                  np.array(priority, dtype=np.int64), tol)


def test_the_first_come_flow_takes_the_link_the_later_one_waits():
    # one link of 10 B/s: flow 0 (priority 1) gets all 10, flow 1 (priority 2) nothing
    np.testing.assert_allclose(_prio_rates([[(0, 1.0)], [(0, 1.0)]], [10.0], [1, 2]),
                               [10.0, 0.0])


def test_a_later_flow_gets_what_the_earlier_ones_cannot_use():
    # link 0 (10 B/s), link 1 (2 B/s).  Flow 0 (first) crosses both: held at 2 by link 1.
    # Flows 1 and 2 (later, equal) on link 0 share the 10 - 2 = 8 left: 4 each.
    rates = _prio_rates([[(0, 1.0), (1, 1.0)], [(0, 1.0)], [(0, 1.0)]], [10.0, 2.0],
                        [0, 5, 5])
    np.testing.assert_allclose(rates, [2.0, 4.0, 4.0])


def test_a_split_flow_of_the_first_class_leaves_half_links():
    # flow 0 (first) sprayed 1/2 + 1/2 over links 0, 1 of 1 B/s: rate 2, both links full;
    # flow 1 (later) on link 1 gets 0.  Swapped, flow 1 takes all of link 1 (1 B/s) and
    # flow 0, which needs link 1 too, gets 0.
    paths = [[(0, 0.5), (1, 0.5)], [(1, 1.0)]]
    np.testing.assert_allclose(_prio_rates(paths, [1.0, 1.0], [0, 1]), [2.0, 0.0])
    np.testing.assert_allclose(_prio_rates(paths, [1.0, 1.0], [1, 0]), [0.0, 1.0])


@st.composite
def _prioritised(draw):
    paths, capacity = draw(_networks())
    priority = [draw(st.integers(0, 2)) for _ in paths]
    return paths, capacity, priority


@settings(max_examples=40, deadline=None)
@given(_prioritised())
def test_each_class_is_max_min_fair_on_what_the_earlier_classes_leave(net):
    # independent of the implementation: per class in order, the LP definition of max-min on
    # the capacity left after the classes before it
    paths, capacity, priority = net
    rates = _prio_rates(paths, capacity, priority)
    left = np.array(capacity, dtype=float)
    for p in sorted(set(priority)):
        members = [f for f in range(len(paths)) if priority[f] == p]
        want = _lp_max_min([paths[f] for f in members], list(left))
        np.testing.assert_allclose(rates[members], want, rtol=1e-6, atol=1e-9)
        for f in members:
            for lk, w in paths[f]:
                left[lk] = max(left[lk] - w * rates[f], 0.0)


@settings(max_examples=40, deadline=None)
@given(_networks(), st.sampled_from([0.0, 0.01]))
def test_one_class_is_plain_max_min(net, tol):
    paths, capacity = net
    flow, link, share = _arrays(paths)
    cap = np.array(capacity, dtype=float)
    np.testing.assert_array_equal(
        priority_max_min_rates(flow, link, share, cap, len(paths),
                               np.full(len(paths), 7, dtype=np.int64), tol),
        max_min_rates(flow, link, share, cap, len(paths), tol))


def test_recomputing_from_a_class_keeps_the_rates_before_it():
    # link 0 (10 B/s): flow 0 (priority 1) had 10; flow 1 (priority 2) had 0.  Flow 0's class
    # is unchanged, flow 2 (priority 2) joins: from class 2 on, flows 1 and 2 share the 0 left.
    # Given a stale rate of 4 for flow 0, the recompute keeps it (10 - 4 = 6 left: 3 each).
    flow, link, share = _arrays([[(0, 1.0)], [(0, 1.0)], [(0, 1.0)]])
    prio = np.array([1, 2, 2])
    cap = np.array([10.0])
    np.testing.assert_allclose(priority_max_min_rates_from(
        flow, link, share, cap, 3, prio, np.array([10.0, 0.0, 0.0]), 2), [10.0, 0.0, 0.0])
    np.testing.assert_allclose(priority_max_min_rates_from(
        flow, link, share, cap, 3, prio, np.array([4.0, 0.0, 0.0]), 2), [4.0, 3.0, 3.0])


@settings(max_examples=60, deadline=None)
@given(_prioritised(), st.integers(0, 3), st.sampled_from([0.0, 0.01]))
def test_recomputing_from_any_class_equals_the_full_computation(net, first, tol):
    # what flow mode does when flows of class `first` or later came or went: the same rates
    # as computing every class again (up to float rounding of the capacity left)
    paths, capacity, priority = net
    flow, link, share = _arrays(paths)
    cap = np.array(capacity, dtype=float)
    prio = np.array(priority, dtype=np.int64)
    full = priority_max_min_rates(flow, link, share, cap, len(paths), prio, tol)
    stale = np.where(prio < first, full, 123.0)  # the later classes' old rates are ignored
    np.testing.assert_allclose(
        priority_max_min_rates_from(flow, link, share, cap, len(paths), prio, stale, first,
                                    tol), full, rtol=1e-9, atol=1e-12)
