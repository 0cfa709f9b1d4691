"""Replicas on a hierarchy as a network flow: the exact optimum, integral by simplex.

With nearest-copy routing on an ultrametric (``placement.replica_tree``), an expert's saving is
sum over nodes v of w[v] x min(1, copies below v): a laminar concave function.  Such functions
are min-cost flows: every copy is one unit of flow from its unit up the expert's own tree, and
each tree arc has two parallel columns, one of capacity 1 that earns w[v] and one that earns
nothing.  Slots are capacities on the units' supply (per layer and in total) and a layer's
E + R copies a capacity at its sink, so the whole model is a network matrix: its LP has integral
vertices and its optimum is the replica model's optimum (a proof, not only a bound).

Rows, all "flow out - flow in": ``total[u]`` (<= the unit's slots over all layers),
``unit[l, u]``, ``node[l, i, v]`` for every internal node v of expert (l, i) (= 0), ``layer[l]``
(>= -(E + R)).  Columns: ``supply[l, u]`` (total -> unit, at most the layer's slots on u),
``leaf[l, i, u]`` (unit -> the expert's parent node of u, capacity 1), ``gain``/``free`` per
non-root internal node (to its parent, capacities 1 and U), ``copies[l, i]`` (root -> layer,
1..U).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from placement.lp import Model, Solved, is_integral, run_highs
from placement.options import SolverOptions
from placement.outcome import SolveStatus
from placement.replica_tree import Classes, Hierarchy, node_weights

ROUNDING_TOL = 1e-6  # fractional slot use within this of a whole number counts as whole


@dataclass(frozen=True, eq=False)
class ReplicaInstance:
    """The replica model on units: demand a[l * E + i, origin unit], unit costs, caps."""

    demand: np.ndarray  # [L * E, U]
    cost: np.ndarray  # [U, U] round trip origin unit -> host unit
    tree: Hierarchy
    num_layers: int
    num_experts: int
    num_redundant: int
    cap_layer: np.ndarray  # [U] copies of one layer a unit may hold
    cap_total: np.ndarray  # [U] copies a unit may hold over all layers

    @property
    def layer_of(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_layers), self.num_experts)

    def use(self, y: np.ndarray) -> np.ndarray:
        """Copies per layer and unit [L, U] of a copy matrix y [L * E, U]."""
        return y.reshape(self.num_layers, self.num_experts, -1).sum(axis=1)

    def fits(self, y: np.ndarray) -> bool:
        use = self.use(y)
        return bool((use <= self.cap_layer).all() and (use.sum(axis=0) <= self.cap_total).all()
                    and y.any(axis=1).all()
                    and (use.sum(axis=1) <= self.num_experts + self.num_redundant).all())


@dataclass(frozen=True, eq=False)
class FlowModel:
    model: Model
    leaf_col: np.ndarray  # [L * E, leaf classes]: column of the copies of (l, i) in a class


def class_caps(inst: ReplicaInstance, cl: Classes) -> tuple[np.ndarray, np.ndarray]:
    """Slots of every leaf class per layer and in total (sums over its units), [C] each."""
    units = cl.leaf_units()
    return (np.array([inst.cap_layer[m].sum() for m in units]),
            np.array([inst.cap_total[m].sum() for m in units]))


def flow_model(inst: ReplicaInstance, cl: Classes, cap_layer: np.ndarray,
               cap_total: np.ndarray) -> FlowModel:
    """The flow model on the merged tree ``cl``; class slots per layer and in total."""
    L, E, R = inst.num_layers, inst.num_experts, inst.num_redundant
    U, n = inst.tree.num_units, L * E
    weight = node_weights(inst.tree, inst.demand)[0][:, cl.first]  # [n, merged nodes]
    count = cl.count.astype(np.float64)
    C, root = len(cl.leaves), cl.root
    slot = np.full(len(cl.parent), -1)
    slot[cl.internal] = np.arange(len(cl.internal))
    K = len(cl.internal)
    m = Model()
    r_total = m.add_rows("total", -np.inf, cap_total, C)
    r_unit = m.add_rows("unit", 0.0, 0.0, L * C)
    r_node = m.add_rows("node", 0.0, 0.0, n * K)
    r_layer = m.add_rows("layer", -float(E + R), np.inf, L)
    c_sup = m.add_cols(np.zeros(L * C), 0.0, np.broadcast_to(cap_layer, (L, C)).reshape(-1))
    lc = np.arange(L * C)
    m.add_entries(r_total + lc % C, c_sup + lc, 1.0)
    m.add_entries(r_unit + lc, c_sup + lc, -1.0)
    rows_e = np.arange(n)
    c_leaf = m.add_cols(-weight[:, cl.leaves].reshape(-1), 0.0, np.tile(count[cl.leaves], n))
    leaf_col = c_leaf + np.arange(n * C).reshape(n, C)
    m.add_entries(r_unit + (inst.layer_of[:, None] * C + np.arange(C)[None, :]), leaf_col, 1.0)
    head = slot[cl.parent[cl.leaves]]
    m.add_entries(r_node + rows_e[:, None] * K + head[None, :], leaf_col, -1.0)
    mid = cl.internal[cl.internal != root]
    for gain in (True, False):
        cost = -weight[:, mid] if gain else np.zeros((n, len(mid)))
        cap = count[mid] if gain else np.full(len(mid), float(U))
        c0 = m.add_cols(cost.reshape(-1), 0.0, np.tile(cap, n))
        cols = c0 + np.arange(n * len(mid)).reshape(n, len(mid))
        m.add_entries(r_node + rows_e[:, None] * K + slot[mid][None, :], cols, 1.0)
        m.add_entries(r_node + rows_e[:, None] * K + slot[cl.parent[mid]][None, :], cols, -1.0)
    c_cp = m.add_cols(np.zeros(n), 1.0, float(U))
    m.add_entries(r_node + rows_e * K + slot[root], c_cp + rows_e, 1.0)
    m.add_entries(r_layer + inst.layer_of, c_cp + rows_e, -1.0)
    return FlowModel(m, leaf_col)


def deal(per_class: np.ndarray, cl: Classes, units: int) -> np.ndarray:
    """Copies y [n, U] from copies per leaf class [n, C]: each class's units in turn, one
    running position per class over all rows, so that a row's copies lie in different subtrees
    as far as they can and every unit gets the same number (within one) per layer and in all."""
    y = np.zeros((len(per_class), units), dtype=bool)
    for c, members in enumerate(cl.leaf_units()):
        k = per_class[:, c].astype(np.int64)  # at most len(members): distinct units
        rows = np.repeat(np.arange(len(k)), k)
        y[rows, members[np.arange(k.sum()) % len(members)]] = True
    return y


def solve_flow(inst: ReplicaInstance, cl: Classes, options: SolverOptions, deadline: float,
               caps: tuple[np.ndarray, np.ndarray] | None = None,
               ) -> tuple[np.ndarray, float] | None:
    """The flow model by simplex: copies y [L * E, U] (bool) and the model's optimum, a lower
    bound on every layout (merged classes can only count more saving); None when HiGHS
    stopped without an optimal vertex (a limit).  ``caps``: class slots per layer and in
    total (default: the units' sums)."""
    cap_layer, cap_total = caps if caps is not None else class_caps(inst, cl)
    fm = flow_model(inst, cl, cap_layer, cap_total)
    sol = run_highs(fm.model, options, integer=False, deadline=deadline)
    x = _vertex(fm, sol)
    if x is None:
        return None
    base = float(node_weights(inst.tree, inst.demand)[1].sum())
    return deal(x, cl, inst.tree.num_units), base + sol.outcome.objective


def _vertex(fm: FlowModel, sol: Solved) -> np.ndarray | None:
    """Copies per class [n, C] of an optimal simplex vertex; None when HiGHS stopped early."""
    if sol.x is None or sol.status is not SolveStatus.OPTIMAL:
        return None
    x = sol.x[fm.leaf_col]
    if not is_integral(x):  # cannot happen for a network matrix; never round silently
        raise RuntimeError("replica flow model: simplex returned a fractional vertex")
    return np.round(x)


def layer_capacities(cap_layer: np.ndarray, cap_total: np.ndarray, use: np.ndarray,
                     options: SolverOptions) -> np.ndarray | None:
    """Whole slots per layer and class [L, C] from a fractional use [L, C] that meets the caps.

    A controlled rounding first: every cell its floor or ceiling, every layer's sum and every
    class's sum over layers too (a transportation polytope: its LP vertex is integral and such
    a rounding always exists), so each layer keeps at least the copies it had.  Then every
    class's spare slots go to its layers, largest fractional use first, within the per-layer
    cap.  None if HiGHS fails (it does not on these models).
    """
    L, C = use.shape
    cap_l = np.floor(cap_layer + ROUNDING_TOL)
    use = np.minimum(use, cap_l[None, :])  # a master stopped early may exceed a layer cap
    m = Model()
    col = m.add_cols(np.zeros(L * C), np.floor(use + ROUNDING_TOL).reshape(-1),
                     np.ceil(use - ROUNDING_TOL).reshape(-1)) + np.arange(L * C)
    row_sum, class_sum = use.sum(axis=1), use.sum(axis=0)
    r_l = m.add_rows("layer", np.floor(row_sum + ROUNDING_TOL), np.ceil(row_sum - ROUNDING_TOL),
                     L)
    m.add_entries(r_l + col // C, col, 1.0)
    r_c = m.add_rows("class", np.floor(class_sum + ROUNDING_TOL),
                     np.minimum(np.ceil(class_sum - ROUNDING_TOL), cap_total), C)
    m.add_entries(r_c + col % C, col, 1.0)
    sol = run_highs(m, options, integer=False)
    if sol.x is None or sol.status is not SolveStatus.OPTIMAL or not is_integral(sol.x):
        return None
    K = np.round(sol.x).reshape(L, C)
    frac = use - K
    for c in range(C):
        spare = int(round(cap_total[c] - K[:, c].sum()))
        order = np.argsort(-frac[:, c], kind="stable")
        while spare > 0:
            room = order[K[order, c] < cap_l[c]]
            if room.size == 0:
                break
            take = room[:spare]
            K[take, c] += 1
            spare -= len(take)
    return K


def solve_layers(inst: ReplicaInstance, cl: Classes, use: np.ndarray, options: SolverOptions,
                 deadline: float) -> np.ndarray | None:
    """Every layer's flow model alone within whole class slots near the fractional ``use``
    [L, U] (which meets the caps): copies y [L * E, U], or None when the time ran out."""
    E = inst.num_experts
    cap_layer, cap_total = class_caps(inst, cl)
    per_class = np.stack([use[:, m].sum(axis=1) for m in cl.leaf_units()], axis=1)
    K = layer_capacities(cap_layer, cap_total, per_class, options)
    if K is None:
        return None
    counts = np.zeros((inst.num_layers * E, len(cl.leaves)))
    for li in range(inst.num_layers):
        rows = slice(li * E, (li + 1) * E)
        one = replace(inst, demand=inst.demand[rows], num_layers=1)
        fm = flow_model(one, cl, K[li], K[li])
        x = _vertex(fm, run_highs(fm.model, options, integer=False, deadline=deadline))
        if x is None:
            return None
        counts[rows] = x
    return deal(counts, cl, inst.tree.num_units)
