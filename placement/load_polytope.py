"""The busiest-link model at scale: a Dantzig-Wolfe bound and a layout that meets it.

Network links carry traffic between servers (GPUs reach the network through their server), so
the busy time of every link depends on a layout only through the server loads
P[b] = sum over layers and experts on b of p[l, i].  ``ilp-bottleneck`` minimises
max_e (P B)_e (``B``: busy seconds per unit of load,
:func:`placement.bottleneck.link_busy_per_load`).

Bound.  For any link weights mu >= 0 with sum 1, max_e (P B)_e >= c . P with c = B mu, so
LB(mu) = min over layouts of c . P is a lower bound on every layout.  Dropping ``cap_total``
(implied by ``cap_layer`` whenever layers x cap_layer <= cap_total, as with the default slots;
otherwise a relaxation, still a valid bound) the minimum splits by layer, and each layer's is a
transportation problem with the rank-one cost p[l, i] x c[b]: by the rearrangement inequality
the hottest experts go to the cheapest servers, filling each server's per-layer capacity.
Every layer uses the same server order, so the minimiser is the vector of column sums of the
descending-sorted activation, dealt over that order (:meth:`LoadPolytope.cheapest`,
O(E + S log S) per call).  Column generation over these vertices (Dantzig-Wolfe): the master LP
min t s.t. sum_j lam_j (P_j B)_e <= t, sum_j lam_j = 1 has a handful of columns and one row
per link; its link duals are the next mu (smoothed towards the best one found, Wentges); it
stops when the master's value and the best LB(mu) meet.  The master optimum is the optimum of
the LP relaxation of the full MIP (the x-polytope is integral, so its projection on P is the
convex hull of the layouts' load vectors): 475k columns at DeepSeek-R1 size, solved here with
a master of a few hundred.

Layout.  The master's load vector P* = sum_j lam_j P_j is reached fractionally; an integral
layout close to it: every layer dealt by one of the master's server orders, the orders
apportioned to layers by their weights lam_j (:func:`layout_from_columns`; when ``cap_total``
binds, experts hottest first to the server furthest below target with room,
:func:`layout_near`), then swaps of two experts of one layer (or an expert and a free slot)
that reduce sum_b (P_b - P*_b)^2 (:func:`refine_swaps`).  The gap of
the result to LB is reported; it closes as experts get small against server loads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import highspy
import numpy as np

from placement.lp import quiet_highs, rerun_optimal

MASTER_TOL = 1e-5  # relative distance of master value and bound at which generation stops
MAX_COLUMNS = 2_000  # columns of the master LP at most (each a vertex of the load polytope)
SMOOTHING = 0.5  # Wentges: price at SMOOTHING x best mu + (1 - SMOOTHING) x master mu
MASTER_SHARE = 0.6  # of the time left, the share the master may use (the layout needs the rest)


@dataclass(frozen=True, eq=False)
class LoadPolytope:
    """The server-load vectors of all layouts (with ``cap_total`` relaxed when not implied).

    ``ranked[r]``: sum over layers of the r-th hottest activation of the layer, [E];
    ``cap_layer``: experts of one layer a server holds, [S].
    """

    ranked: np.ndarray
    cap_layer: np.ndarray

    @classmethod
    def of(cls, activation: np.ndarray, cap_layer: np.ndarray) -> LoadPolytope:
        return cls(-np.sort(-activation, axis=1).sum(axis=0), np.asarray(cap_layer, dtype=int))

    def cheapest(self, c: np.ndarray) -> np.ndarray:
        """argmin over layouts of c . P: hottest experts to the cheapest servers, every layer."""
        order = np.argsort(c, kind="stable")
        slots = np.repeat(order, self.cap_layer[order])[: len(self.ranked)]
        return np.bincount(slots, weights=self.ranked, minlength=len(c))


@dataclass(frozen=True)
class MasterResult:
    """The bound, the master's load vector P* and how the generation went."""

    bound: float  # best LB: a lower bound on every layout's objective
    master_value: float  # the master LP's optimum (the LP relaxation's when converged)
    target: np.ndarray  # P* = sum lam_j P_j, [S]
    orders: np.ndarray  # server order of each column with lam_j > 0, [n, S]
    lam: np.ndarray  # their weights, [n], sum 1
    columns: int
    iterations: int
    converged: bool


def _weights(duals: np.ndarray) -> np.ndarray:
    mu = np.abs(duals)
    total = mu.sum()
    return mu / total if total > 0 else np.full(len(mu), 1.0 / len(mu))


def solve_master(
    poly: LoadPolytope, deadline: float, threads: int = 1, starts: tuple[np.ndarray, ...] = (),
    B: np.ndarray | None = None, cost: np.ndarray | None = None, cap: np.ndarray | None = None,
) -> MasterResult:
    """Column generation over the load polytope until converged or ``deadline``.

    Minimises max_e (P B)_e (when ``B`` [S, links] is given) + cost . P subject to
    P <= ``cap`` (where finite).  With link weights mu (sum 1) and cap prices nu >= 0, every
    layout costs at least LB = c . P_c - nu . cap, c = cost + B mu + nu, P_c the cheapest
    vertex for c: the bound, evaluated exactly on the pricing result (no solver tolerance
    enters it).  Cap rows have slack columns at a high price, so the master is always
    feasible.  ``starts``: load vectors of known layouts (first columns).
    """
    S = len(poly.cap_layer)
    B = np.zeros((S, 0)) if B is None else B
    cost = np.zeros(S) if cost is None else np.asarray(cost, dtype=np.float64)
    ne = B.shape[1]
    capped = np.flatnonzero(np.isfinite(cap)) if cap is not None else np.zeros(0, dtype=int)
    cap_v = np.asarray(cap, dtype=np.float64)[capped] if cap is not None else np.zeros(0)
    nc = len(capped)
    h = _master_lp(threads, ne, cap_v, big=1e3 * (
        float(np.abs(cost).max()) + float(B.max(initial=0.0)) + 1.0))
    inf = highspy.kHighsInf
    first_lam = int(ne > 0) + nc
    rows = np.arange(ne + nc + 1, dtype=np.int32)
    cols: list[np.ndarray] = []
    orders: list[np.ndarray | None] = []

    def add(P: np.ndarray, c: np.ndarray | None = None) -> None:
        cols.append(P)
        orders.append(None if c is None else np.argsort(c, kind="stable"))
        h.addCol(float(cost @ P), 0.0, inf, ne + nc + 1, rows,
                 np.concatenate([P @ B, P[capped], [1.0]]))

    def price(mu: np.ndarray, nu: np.ndarray) -> float:
        c = cost + B @ mu
        c[capped] += nu
        P = poly.cheapest(c)
        add(P, c)
        return float(c @ P - nu @ cap_v)

    mu_best, nu_best = np.full(ne, 1.0 / max(ne, 1)), np.zeros(nc)
    for P in starts:
        add(P)
    best = price(mu_best, nu_best)
    value, target, it = math.inf, cols[0], 0
    lam = np.zeros(len(cols))

    def closed() -> bool:
        return value - best <= MASTER_TOL * max(abs(value), 1e-12)

    while True:
        it += 1
        run = rerun_optimal(h, deadline)
        if run is None:
            break
        x, dual, value = run
        lam = np.maximum(x[first_lam:], 0.0)
        target = (lam / lam.sum()) @ np.array(cols[: len(lam)])
        mu_m = _weights(dual[:ne]) if ne else mu_best
        nu_m = np.abs(dual[ne:ne + nc])
        for mu, nu in ((mu_m, nu_m), (SMOOTHING * mu_best + (1 - SMOOTHING) * mu_m,
                                      SMOOTHING * nu_best + (1 - SMOOTHING) * nu_m)):
            lb = price(mu, nu)
            if lb > best:
                best, mu_best, nu_best = lb, mu, nu
        if closed() or len(cols) >= MAX_COLUMNS or time.perf_counter() >= deadline:
            break
    keep = [j for j in range(len(lam)) if lam[j] > 1e-9 and orders[j] is not None]
    lam_k = lam[keep] / lam[keep].sum() if keep else np.zeros(0)
    order_k = np.array([orders[j] for j in keep]).reshape(len(keep), S)
    return MasterResult(best, value, target, order_k, lam_k, len(cols), it, closed())


def _master_lp(threads: int, ne: int, cap_v: np.ndarray, big: float) -> highspy.Highs:
    """The master LP before its columns of layouts: a row per link (t >= link busy time), a
    row per capped server (load <= cap, slack priced ``big``), the convexity row; then the
    column t of the busiest link (when there are links) and the slack columns."""
    nc = len(cap_v)
    h = quiet_highs(threads)
    inf = highspy.kHighsInf
    none_i, none_v = np.zeros(0, dtype=np.int32), np.zeros(0)
    h.addRows(ne + nc + 1, np.concatenate([np.full(ne + nc, -inf), [1.0]]),
              np.concatenate([np.zeros(ne), cap_v, [1.0]]), 0,
              np.zeros(ne + nc + 1, dtype=np.int32), none_i, none_v)
    if ne:  # t: the busiest link
        h.addCol(1.0, 0.0, inf, ne, np.arange(ne, dtype=np.int32), np.full(ne, -1.0))
    for k in range(nc):  # slack of each cap row
        h.addCol(big, 0.0, inf, 1, np.array([ne + k], dtype=np.int32), np.array([-1.0]))
    return h


def _dealt(w: np.ndarray, cap_layer: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Server of each expert of one layer: the hottest to the first servers of ``order``."""
    slots = np.repeat(order, cap_layer[order])[: len(w)]
    out = np.empty(len(w), dtype=np.int64)
    out[np.argsort(-w, kind="stable")] = slots
    return out


def layout_from_columns(
    activation: np.ndarray, cap_layer: np.ndarray, cap_total: np.ndarray, master: MasterResult
) -> np.ndarray | None:
    """Server of every expert [L, E]: each layer dealt by one of the master's server orders.

    Layer by layer, the order whose layer loads keep the running sum closest to its share
    of P* (squared distance): an apportionment of the layers to the columns by their weights.
    None when the master has no such columns or a server's total would exceed ``cap_total``.
    """
    L, E = activation.shape
    if len(master.lam) == 0:
        return None
    S = len(master.target)
    acc = np.zeros(S)
    out = np.empty((L, E), dtype=np.int64)
    for li in range(L):
        cand = [_dealt(activation[li], cap_layer, o) for o in master.orders]
        loads = np.array([np.bincount(c, weights=activation[li], minlength=S) for c in cand])
        dev = ((acc[None] + loads - (li + 1) / L * master.target[None]) ** 2).sum(axis=1)
        j = int(np.argmin(dev))
        out[li] = cand[j]
        acc += loads[j]
    if (np.bincount(out.ravel(), minlength=S) > cap_total).any():
        return None
    return out


def layout_near(
    activation: np.ndarray, cap_layer: np.ndarray, cap_total: np.ndarray, target: np.ndarray
) -> np.ndarray | None:
    """Server of every expert [L, E]: hottest first to the server furthest below ``target``.

    Only servers with room in the expert's layer and in total are candidates, so no cap is
    exceeded; None when an expert finds no room (possible only when cap_total binds).
    """
    L, E = activation.shape
    S = len(target)
    per_layer = np.zeros((L, S), dtype=np.int64)
    total = np.zeros(S, dtype=np.int64)
    load = np.zeros(S)
    out = np.empty(L * E, dtype=np.int64)
    w = activation.reshape(-1)
    for flat in np.argsort(-w, kind="stable"):
        li = int(flat) // E
        room = (per_layer[li] < cap_layer) & (total < cap_total)
        if not room.any():
            return None
        b = int(np.argmax(np.where(room, target - load, -np.inf)))
        out[flat] = b
        per_layer[li, b] += 1
        total[b] += 1
        load[b] += w[flat]
    return out.reshape(L, E)


def refine_swaps(
    activation: np.ndarray, server: np.ndarray, cap_layer: np.ndarray, cap_total: np.ndarray,
    target: np.ndarray, deadline: float, done: Callable[[np.ndarray], bool],
    max_moves: int = 20_000,
) -> tuple[np.ndarray, int]:
    """Swaps within a layer (two experts, or an expert and a free slot) towards ``target``.

    Each move is the one of the most-deviating server that most reduces
    sum_b (P_b - P*_b)^2: moving delta from a to b gains 2 delta (d_a - d_b) - 2 delta^2.
    Stops when no move gains, at ``deadline``, or once ``done(P)`` holds for the loads P.
    Returns the new servers [L, E] and the number of moves.
    """
    L, E = activation.shape
    S = len(target)
    K = int(cap_layer.max())
    slot = np.full((S, L, K), -1, dtype=np.int64)  # expert in each slot, -1 free
    fill = np.zeros((L, S), dtype=np.int64)
    for li in range(L):
        for i in range(E):
            b = server[li, i]
            slot[b, li, fill[li, b]] = i
            fill[li, b] += 1
    valid = np.arange(K)[None, None, :] < cap_layer[:, None, None]
    wt = np.where(slot >= 0, np.take_along_axis(
        np.broadcast_to(activation[None], (S, L, E)), np.maximum(slot, 0), axis=2), 0.0)
    wt = np.where(valid, wt, np.nan)
    P = np.nansum(wt, axis=(1, 2))
    total = (slot >= 0).sum(axis=(1, 2))
    scale = float(np.abs(target).max()) or 1.0
    moves = 0
    while moves < max_moves and time.perf_counter() < deadline and not done(P):
        d = P - target
        for a in np.argsort(-np.abs(d)):
            delta = wt[a][None, :, :, None] - wt[:, :, None, :]  # [b, L, i on a, j on b]
            gain = 2 * delta * (d[a] - d)[:, None, None, None] - 2 * delta**2
            real_a = (slot[a] >= 0)[None, :, :, None]
            real_b = (slot >= 0)[:, :, None, :]
            # a slot that gets an expert where there was none: the receiver's total grows
            gain = np.where(~real_a & real_b & (total[a] >= cap_total[a]), np.nan, gain)
            grow_b = (total >= cap_total)[:, None, None, None]
            gain = np.where(real_a & ~real_b & grow_b, np.nan, gain)
            gain[a] = np.nan
            if not np.isfinite(gain).any():
                continue
            k = int(np.nanargmax(gain))
            if gain.flat[k] <= 1e-12 * scale * scale:
                continue
            b, li, i, j = (int(v) for v in np.unravel_index(k, gain.shape))
            ea, eb = slot[a, li, i], slot[b, li, j]
            slot[a, li, i], slot[b, li, j] = eb, ea
            wt[a, li, i], wt[b, li, j] = wt[b, li, j], wt[a, li, i]
            P[a] -= delta[b, li, i, j]
            P[b] += delta[b, li, i, j]
            total[a] += int(eb >= 0) - int(ea >= 0)
            total[b] += int(ea >= 0) - int(eb >= 0)
            moves += 1
            break
        else:
            break
    out = np.empty((L, E), dtype=np.int64)
    s_idx, l_idx, _ = np.nonzero(slot >= 0)
    out[l_idx, slot[slot >= 0]] = s_idx
    return out, moves
