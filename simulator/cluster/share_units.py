"""Exact byte counts under split multipath shares, independent of summation order.

Split modes put a fraction of a copy on a link: spraying divides by the next-hop count at
every switch, so a link's share of a pair is a sum of products of 1/(next hops); per-flow ECMP
gives count/flows.  Each such share is a whole multiple of ``1/D`` for the route set's *share
denominator* D (:func:`spray_denominator`, :func:`ecmp_denominator`).  Byte counters therefore
keep whole *units* of 1/D byte: every addend is an integer, sums are exact whatever their order
(a split replay, the event engine's arrival order, the analytic counter's grouping), and the
whole-byte column is the exact value rounded half to even (:func:`whole_bytes`).

Units are carried in float64 where numpy sums them (``np.bincount``): integers below 2**53 add
exactly.  A denominator above :data:`MAX_SHARE_DENOMINATOR` (irregular fabrics whose next-hop
counts multiply up) is not representable this way: :func:`spray_denominator` returns ``None``
and the counters fall back to float sums rounded once, as documented in
docs/background/simulator.md.
"""

from __future__ import annotations

import math

import numpy as np

MAX_SHARE_DENOMINATOR = 1 << 20  # units x bytes stay far below 2**53 per link and layer


def spray_denominator(state_src: np.ndarray, state_dst: np.ndarray, fanout: np.ndarray,
                      levels: np.ndarray, num_states: int) -> int | None:
    """The least common multiple of every edge share's denominator of a spray propagator
    (edges ordered by ``levels``, deepest first: sources before the nodes they feed).

    A state's copies have denominator ``den[u]`` (1 where copies start); an edge carries them
    divided by the node's fan-out, denominator ``den[u] * fanout``; the node it feeds collects
    the lcm of what reaches it.  ``None`` when it exceeds :data:`MAX_SHARE_DENOMINATOR`."""
    den = np.ones(num_states, dtype=np.int64)
    out = 1
    for lo, hi in zip(levels[:-1].tolist(), levels[1:].tolist(), strict=True):
        if lo == hi:
            continue
        edge = den[state_src[lo:hi]] * fanout[lo:hi]
        top = int(edge.max())
        if top > MAX_SHARE_DENOMINATOR:
            return None
        out = math.lcm(out, *np.unique(edge).tolist())
        if out > MAX_SHARE_DENOMINATOR:
            return None
        np.lcm.at(den, state_dst[lo:hi], edge)
    return out


def ecmp_denominator(flows: list[int]) -> int | None:
    """Per-flow ECMP: a pair's share on a link is (flows through it) / (flows of the pair)."""
    out = math.lcm(1, *flows)
    return out if out <= MAX_SHARE_DENOMINATOR else None


def share_units(shares: np.ndarray, denominator: int) -> np.ndarray:
    """Shares as whole units of 1/denominator (int64); raises if a share is not one."""
    x = np.asarray(shares, dtype=np.float64) * denominator
    got = np.rint(x)
    if got.size and float(np.abs(x - got).max()) > 1e-6:
        raise ValueError(f"a share is not a multiple of 1/{denominator}")
    return got.astype(np.int64)


def add_units(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total + part`` without overflow: int64 sums move to Python integers (object arrays)
    before they could wrap; float (inexact) counts add as floats."""
    if total.dtype == np.float64:
        return total + part
    if total.dtype != object and total.size and (
        int(np.abs(total).max()) + int(np.abs(part).max()) >= 1 << 62
    ):
        total = total.astype(object)
    return total + part


def whole_bytes(units: np.ndarray, denominator: int | None) -> np.ndarray:
    """Bytes from units of 1/denominator, rounded half to even exactly (int64).  ``None``:
    the counts are plain float bytes (no exact denominator), rounded once."""
    if denominator is None:
        return np.rint(np.asarray(units, dtype=np.float64)).astype(np.int64)
    u = np.asarray(units)
    if u.dtype != object:
        u = np.rint(u.astype(np.float64)).astype(np.int64)
    q = u // denominator  # operators, not np.divmod: object arrays hold Python integers
    twice = 2 * (u - q * denominator)
    up = (twice > denominator) | ((twice == denominator) & (q % 2 == 1))
    return (q + up.astype(np.int64)).astype(np.int64)
