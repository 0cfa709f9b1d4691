"""Replicas on a hierarchy: a lower bound by decomposition over layers, and a layout near it.

The replica model (``placement.replicas``) couples layers only through the slots of each unit
(``cap_total``); the per-layer caps and the E + R copies of a layer are the layer's own.  With
a price per unit slot (lambda) and per layer and unit (mu), every expert's best copy set for
each count comes from the long-path chains of the hierarchy (``placement.replica_tree``) and a
layer takes the R extra copies that gain most: the exact minimum of the priced problem.  So::

    bound(lambda, mu) = sum over layers of that minimum - lambda . cap_total - mu . cap_layer

is a lower bound on every layout for any prices >= 0 (Lagrangian relaxation).  A Dantzig-Wolfe
master over the layers' priced solutions (58 convexity rows, one row per unit and per layer
and unit) finds the prices; its columns also give the layout: per layer the column of largest
weight, then copies moved off over-full units at the least cost increase, then the free slots
filled with the copies that gain most.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import highspy
import numpy as np

from placement.lp import quiet_highs, rerun_optimal
from placement.replica_flow import ReplicaInstance
from placement.replica_tree import chains, node_weights, set_cost

SMOOTHING = 0.5  # weight of the best prices so far in the stabilised pricing point
MAX_ROUNDS = 400


@dataclass(frozen=True, eq=False)
class _Priced:
    """The priced minimum of every layer: its Lagrangian value and the copies it chose."""

    value: float  # the lower bound at these prices
    layer_cost: np.ndarray  # [L] cost of each layer's copies, without prices
    use: np.ndarray  # [L, U]
    count: np.ndarray  # [L * E] copies of each expert
    ends: np.ndarray  # [L * E, max count] their units (first count entries)


def _price(inst: ReplicaInstance, weight: np.ndarray, base: np.ndarray, lam: np.ndarray,
           mu: np.ndarray) -> _Priced:
    L, E, R = inst.num_layers, inst.num_experts, inst.num_redundant
    prices = lam[None, :] + mu  # [L, U]
    value, ends = chains(weight, prices[inst.layer_of], inst.tree)
    k = min(R, inst.tree.num_units - 1)
    extra = value[:, 1:k + 1].reshape(L, -1)  # [L, E * k], row-major (expert, rank)
    order = np.argsort(-extra, axis=1, kind="stable")[:, :R]
    gain = np.take_along_axis(extra, order, axis=1)
    take = np.zeros_like(extra, dtype=bool)
    np.put_along_axis(take, order, gain > 0, axis=1)
    take = take.reshape(L * E, k)
    count = 1 + take.sum(axis=1)
    priced = (base - value[:, 0]).reshape(L, E).sum(axis=1) - np.where(
        take, value[:, 1:k + 1], 0.0).reshape(L, -1).sum(axis=1)
    width = int(count.max())
    ends = ends[:, :width]
    has = np.arange(width)[None, :] < count[:, None]
    use = np.zeros((L, inst.tree.num_units))
    np.add.at(use, (inst.layer_of[:, None].repeat(width, axis=1)[has], ends[has]), 1.0)
    layer_cost = priced - (prices * use).sum(axis=1)
    bound = float(priced.sum() - lam @ inst.cap_total - (mu * inst.cap_layer[None, :]).sum())
    return _Priced(bound, layer_cost, use, count, ends)


def copies_of(count: np.ndarray, ends: np.ndarray, units: int) -> np.ndarray:
    """The copy matrix y [n, U] of ``count`` copies per row on the units ``ends``."""
    y = np.zeros((len(count), units), dtype=bool)
    has = np.arange(ends.shape[1])[None, :] < count[:, None]
    y[np.nonzero(has)[0], ends[has]] = True
    return y


@dataclass(frozen=True, eq=False)
class BoundResult:
    """The best prices' lower bound, the master's value and each layer's share of the units:
    the master's mix of columns, use [L, U] (fractional; it meets every cap)."""

    bound: float
    master_value: float
    use: np.ndarray
    rounds: int
    closed: bool  # the master's value met the bound (the decomposition converged)


class _Master:
    """The restricted master: convexity rows per layer, slot rows per unit, and the per-layer
    cap rows that some mix of columns has exceeded (added when needed)."""

    def __init__(self, inst: ReplicaInstance, threads: int) -> None:
        L, U = inst.num_layers, inst.tree.num_units
        self.inst, self.h = inst, quiet_highs(threads)
        inf = highspy.kHighsInf
        self.h.addRows(L + U, np.concatenate([np.ones(L), np.full(U, -inf)]),
                       np.concatenate([np.ones(L), inst.cap_total]), 0,
                       np.zeros(L + U, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0))
        self.uses: list[np.ndarray] = []  # [U] per column
        self.layers: list[int] = []
        self.layer_rows: dict[tuple[int, int], int] = {}  # (layer, unit) -> row

    def add(self, cost: np.ndarray, use: np.ndarray) -> None:
        L = self.inst.num_layers
        for li in range(L):
            nz = np.flatnonzero(use[li])
            extra = [(r, use[li, u]) for (lj, u), r in self.layer_rows.items() if lj == li]
            idx = np.concatenate([[li], L + nz, [r for r, _ in extra]]).astype(np.int32)
            val = np.concatenate([[1.0], use[li, nz], [v for _, v in extra]])
            self.h.addCol(float(cost[li]), 0.0, highspy.kHighsInf, len(idx), idx, val)
            self.uses.append(use[li].copy())
            self.layers.append(li)

    def mix(self, theta: np.ndarray) -> np.ndarray:
        """Each layer's use of the units under the master's weights, [L, U]."""
        out = np.zeros((self.inst.num_layers, self.inst.tree.num_units))
        for j, t in enumerate(theta[: len(self.uses)]):
            if t > 0:
                out[self.layers[j]] += t * self.uses[j]
        return out

    def add_layer_caps(self, use: np.ndarray) -> bool:
        """Rows for the (layer, unit) caps the mix ``use`` exceeds; False when none does."""
        over = np.argwhere(use > self.inst.cap_layer[None, :] + 1e-9)
        for li, u in over.tolist():
            cols = [j for j, lj in enumerate(self.layers) if lj == li and self.uses[j][u] > 0]
            self.layer_rows[(li, u)] = self.h.getNumRow()
            self.h.addRow(-highspy.kHighsInf, float(self.inst.cap_layer[u]), len(cols),
                          np.array(cols, dtype=np.int32),
                          np.array([self.uses[j][u] for j in cols]))
        return len(over) > 0

    def prices(self, dual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot prices lambda [U] and per-layer cap prices mu [L, U] from the row duals."""
        L, U = self.inst.num_layers, self.inst.tree.num_units
        lam = np.maximum(-dual[L:L + U], 0.0)
        mu = np.zeros((L, U))
        for (li, u), r in self.layer_rows.items():
            mu[li, u] = max(-dual[r], 0.0)
        return lam, mu


def decompose(
    inst: ReplicaInstance, y0: np.ndarray, deadline: float, tol: float, threads: int = 1
) -> BoundResult:
    """The Dantzig-Wolfe master over layers from the layout ``y0`` (which must fit the caps)."""
    L, U = inst.num_layers, inst.tree.num_units
    weight, base = node_weights(inst.tree, inst.demand)
    master = _Master(inst, threads)
    master.add(set_cost(inst.demand, inst.cost, y0).reshape(L, -1).sum(axis=1), inst.use(y0))
    lam_best, mu_best = np.zeros(U), np.zeros((L, U))
    p = _price(inst, weight, base, lam_best, mu_best)
    master.add(p.layer_cost, p.use)
    best, value, rounds = p.value, math.inf, 0
    use = inst.use(y0).astype(np.float64)
    while rounds < MAX_ROUNDS and time.perf_counter() < deadline:
        rounds += 1
        run = rerun_optimal(master.h, deadline)
        if run is None:
            break
        x, dual, value = run
        use = master.mix(x)
        lam_m, mu_m = master.prices(dual)
        for lam, mu in ((lam_m, mu_m), (SMOOTHING * lam_best + (1 - SMOOTHING) * lam_m,
                                        SMOOTHING * mu_best + (1 - SMOOTHING) * mu_m)):
            p = _price(inst, weight, base, lam, mu)
            master.add(p.layer_cost, p.use)
            if p.value > best:
                best, lam_best, mu_best = p.value, lam, mu
        if value - best <= tol * max(abs(value), 1e-12) and not master.add_layer_caps(use):
            break
    return BoundResult(best, value, use, rounds, value - best <= tol * max(abs(value), 1e-12))
