"""Max-min fair rates of flows sharing links: progressive filling, vectorised (pure numpy).

Flow f puts ``weight[e] * rate[f]`` on link ``link[e]`` for each of its entries e (a share of a
split hop carries its share of the flow); a link's load must stay within its capacity.  The
max-min fair allocation is the one in which no flow can get faster without slowing a flow that
is already no faster than it.  Progressive filling finds it: raise every unfrozen flow's rate
at the same pace; when a link fills up, the flows crossing it are frozen at the level reached;
repeat with the capacity left until every flow is frozen.  Each round is a handful of numpy
passes over the entries, and the rounds are the distinct bottleneck levels.

``tolerance`` > 0 freezes, in one round, every link that would fill at a level within that
relative margin of the level reached: its flows get that level (at most that fraction below
their max-min rate), and rounds closer than that are merged.  With ``tolerance=0`` the result is
the exact max-min fair allocation (up to float rounding).

:func:`priority_max_min_rates` serves classes of flows in strict priority: the first class
gets its max-min fair rates as if the others were absent, the next class shares what capacity
it leaves, max-min fairly, and so on (how flow mode models first-come first-served links:
flows that arrived earlier are served first, :mod:`simulator.flow_network`).  A class's rates
depend only on the classes before it, so when flows of some classes come or go
:func:`priority_max_min_rates_from` recomputes the classes from the first one that changed and
keeps the rates before it.
"""

from __future__ import annotations

import numpy as np

# links count as full when within this relative margin (float rounding of the sums)
FULL_RTOL = 1e-12


def max_min_rates(
    flow: np.ndarray,
    link: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    num_flows: int,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Max-min fair rate of every flow (module docstring).

    ``flow``, ``link``, ``weight``: one entry per (flow, link) with the flow's share there
    (> 0); ``capacity``: per link (>= 0: the flows over a link without any get rate 0).
    A flow without entries gets rate 0.
    """
    rate = np.zeros(num_flows)
    if num_flows == 0 or flow.size == 0:
        return rate
    _fill(flow, link, np.asarray(weight, dtype=np.float64), capacity.astype(np.float64), rate,
          np.ones(num_flows, dtype=bool), np.zeros(capacity.shape[0], dtype=bool), tolerance)
    return rate


def _fill(
    fe: np.ndarray, le: np.ndarray, we: np.ndarray, residual: np.ndarray, rate: np.ndarray,
    free: np.ndarray, full: np.ndarray, tolerance: float,
) -> None:
    """Progressive filling of the entries' flows (:func:`max_min_rates`) into ``rate``, on
    the links' capacities ``residual`` (not changed); ``free`` (True for the flows filled: set
    False as they freeze) and ``full`` (scratch, per link) are the caller's, so that the
    classes of :func:`priority_max_min_rates` share them."""
    nlinks = residual.shape[0]
    level = 0.0
    margin = tolerance + FULL_RTOL
    while True:
        wsum = np.bincount(le, weights=we, minlength=nlinks)
        used = wsum.nonzero()[0]
        fill = residual[used] / wsum[used]
        step = max(float(np.minimum.reduce(fill)), 0.0)
        level += step
        full[used] = fill - step <= margin * level
        frozen = fe[full[le]]
        rate[frozen] = level
        free[frozen] = False
        keep = free[fe]
        if not keep.any():  # every flow frozen (the common case: one round)
            return
        residual = residual - step * wsum
        fe, le, we = fe[keep], le[keep], we[keep]


def priority_max_min_rates(
    flow: np.ndarray,
    link: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    num_flows: int,
    priority: np.ndarray,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Max-min fair rates within strict priority classes (module docstring).

    ``priority``: per flow, lower is served first; flows of equal priority share max-min
    fairly what the classes before them leave.  The other arguments as :func:`max_min_rates`.
    """
    if num_flows == 0 or flow.size == 0:
        return np.zeros(num_flows)
    return _priority_rates(flow, link, weight, priority[flow], capacity, num_flows, tolerance)


def _priority_rates(
    flow: np.ndarray, link: np.ndarray, weight: np.ndarray, prio: np.ndarray,
    capacity: np.ndarray, num_flows: int, tolerance: float,
) -> np.ndarray:
    """:func:`priority_max_min_rates` of at least one entry, ``prio`` per entry."""
    rate = np.zeros(num_flows)  # each flow in one class: its rate is written once
    free = np.ones(num_flows, dtype=bool)
    left = capacity.astype(np.float64)
    nlinks = left.shape[0]
    full = np.zeros(nlinks, dtype=bool)  # scratch: only the links in use are read
    weight = np.asarray(weight, dtype=np.float64)
    if prio.min() == prio.max():  # one class
        _fill(flow, link, weight, left, rate, free, full, tolerance)
        return rate
    order = prio.argsort(kind="stable")
    prio = prio[order]
    cuts = [0, *((prio[1:] != prio[:-1]).nonzero()[0] + 1).tolist(), prio.size]
    fe, le, we = flow[order], link[order], weight[order]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        f, lk, w = fe[lo:hi], le[lo:hi], we[lo:hi]
        _fill(f, lk, w, left, rate, free, full, tolerance)
        if hi < prio.size:  # what the class leaves to the next
            left = np.maximum(left - np.bincount(lk, weights=w * rate[f], minlength=nlinks),
                              0.0)
    return rate


def priority_max_min_rates_from(
    flow: np.ndarray,
    link: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    num_flows: int,
    priority: np.ndarray,
    rate: np.ndarray,
    first_priority: int,
    tolerance: float = 0.0,
) -> np.ndarray:
    """:func:`priority_max_min_rates` when only the classes from ``first_priority`` on
    changed: the flows of the classes before it keep their ``rate`` (which they would get
    again: strict priority), the others share max-min fairly, class by class, what those leave.
    """
    if num_flows == 0 or flow.size == 0:
        return np.zeros(num_flows)
    prio = priority[flow]
    before = prio < first_priority
    if not before.any():
        return _priority_rates(flow, link, weight, prio, capacity, num_flows, tolerance)
    used = np.bincount(link[before], weights=weight[before] * rate[flow[before]],
                       minlength=capacity.shape[0])
    left = np.maximum(capacity - used, 0.0)
    after = ~before
    if not after.any():
        new = np.zeros(num_flows)
    else:
        new = _priority_rates(flow[after], link[after], weight[after], prio[after], left,
                              num_flows, tolerance)
    return np.where(priority < first_priority, rate, new)
