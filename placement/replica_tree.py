"""Nearest-copy cost on a hierarchy of units, and the best copy sets of an expert.

When the round-trip cost between units is an ultrametric (a fat tree: same server < same leaf
< same pod < across pods), the units are the leaves of a tree whose nodes have heights and
``cost(o, u)`` is the height of the lowest common ancestor of o and u.  An expert with copies on
the units S then costs, for origin demand a (a[o] per origin unit, A(v) its sum under node v)::

    cost(S) = height(root) x A(root) - sum over nodes v != root with a copy below them of
              (height(parent(v)) - height(v)) x A(v)

(an origin pays the height of its lowest ancestor that holds a copy; the sum telescopes).  The
covered-node term is a laminar concave function of S, so the best set of c copies grows one unit
at a time: the long-path decomposition of the tree (every node continues along its child with
the largest path value) gives chains whose values, sorted, are the gains of the 1st, 2nd, ...
copy, each best for its count and concave in the count.  A price per unit (a slot's price)
enters as a negative value on its leaf and keeps the property.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_ENTRIES = 1 << 22  # nearest-copy work in [rows, U, U] blocks of at most this many numbers


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """Units 0..U-1 are the leaves (nodes 0..U-1); internal nodes follow, the root is last."""

    below: np.ndarray  # [units, nodes] 1.0 when the unit is under the node
    parent: np.ndarray  # [nodes], -1 for the root
    height: np.ndarray  # [nodes]: cost between units whose lowest common ancestor it is
    children: tuple[np.ndarray, ...]  # of every internal node, in bottom-up order
    internal: np.ndarray  # internal nodes, bottom-up (children before parents)

    @property
    def num_units(self) -> int:
        return int(self.below.shape[0])

    @property
    def root(self) -> int:
        return int(self.parent.shape[0]) - 1

    def step(self) -> np.ndarray:
        """height(parent) - height(node) per node (0 for the root), [nodes]."""
        out = np.zeros(len(self.parent))
        nonroot = self.parent >= 0
        out[nonroot] = self.height[self.parent[nonroot]] - self.height[nonroot]
        return out


def hierarchy_of(cost: np.ndarray) -> Hierarchy | None:
    """The tree whose lowest common ancestors give every entry of ``cost`` [U, U], or None.

    None when ``cost`` is not symmetric, a unit's own cost exceeds its cost to another unit,
    or "cost <= t" is not an equivalence for some threshold t (not an ultrametric).
    """
    U = cost.shape[0]
    scale = float(np.abs(cost).max()) or 1.0
    c = np.round(cost / scale, 9)
    if not np.array_equal(c, c.T):
        return None
    off = ~np.eye(U, dtype=bool)
    if U > 1 and (np.diag(c)[:, None] > np.where(off, c, np.inf)).any():
        return None
    parent = [-1] * U
    height = [float(x) for x in np.diag(cost)]
    first = list(range(U))  # a unit under each node
    children: list[np.ndarray] = []
    current = np.arange(U)  # the node each unit belongs to so far
    for t in np.unique(c[off]) if U > 1 else []:
        same = (c <= t) | ~off
        _, label = np.unique(same, axis=0, return_inverse=True)
        label = label.reshape(-1)
        if not np.array_equal(same, label[:, None] == label[None, :]):
            return None  # "cost <= t" is not transitive
        for g in np.unique(label):
            members = np.flatnonzero(label == g)
            kids = np.unique(current[members])
            if len(kids) < 2:
                continue
            node = len(parent)
            parent.append(-1)
            height.append(float(cost[first[int(kids[0])], first[int(kids[1])]]))
            first.append(first[int(kids[0])])
            for k in kids:
                parent[int(k)] = node
            children.append(kids)
            current[members] = node
    if U == 1:
        parent.append(-1)
        height.append(float(cost[0, 0]))
        parent[0] = 1
        children.append(np.array([0]))
    n = len(parent)
    below = np.zeros((U, n))
    for u in range(U):
        v = u
        while v >= 0:
            below[u, v] = 1.0
            v = parent[v]
    return Hierarchy(below, np.array(parent), np.array(height), tuple(children),
                     np.arange(U, n))


def node_weights(h: Hierarchy, demand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``demand`` [n, U]: each node's covered value [n, nodes] and the cost with no
    node below the root covered, height(root) x total demand [n]."""
    A = demand @ h.below
    return A * h.step()[None, :], h.height[h.root] * A[:, h.root]


def chains(
    weight: np.ndarray, unit_price: np.ndarray, h: Hierarchy
) -> tuple[np.ndarray, np.ndarray]:
    """Long-path chains of every row: values sorted high to low and the unit each ends at.

    ``weight`` [n, nodes] (from :func:`node_weights`), ``unit_price`` [n, U] (subtracted on the
    leaves).  The first c chains are a best set of c copies; its cost is the base cost minus
    the sum of their values.  Ties keep the lower rank first, so a prefix is always taken.
    """
    n, U = weight.shape[0], h.num_units
    best = np.empty_like(weight)
    best[:, :U] = weight[:, :U] - unit_price
    end = np.empty(weight.shape, dtype=np.int64)
    end[:, :U] = np.arange(U)[None, :]
    heavy = np.zeros(weight.shape, dtype=bool)
    rows = np.arange(n)
    for node, kids in zip(h.internal.tolist(), h.children, strict=True):
        b = best[:, kids]
        k = np.argmax(b, axis=1)
        best[:, node] = weight[:, node] + b[rows, k]
        end[:, node] = end[:, kids][rows, k]
        heavy[rows, kids[k]] = True
    value = np.where(heavy, -np.inf, best)
    order = np.argsort(-value, axis=1, kind="stable")[:, :U]
    return np.take_along_axis(value, order, axis=1), np.take_along_axis(end, order, axis=1)


def set_cost(demand: np.ndarray, cost: np.ndarray, has_copy: np.ndarray) -> np.ndarray:
    """Nearest-copy cost of every row: demand [n, U] . min over its copies of cost [U, U]."""
    out = np.empty(len(demand))
    step = max(1, CHUNK_ENTRIES // cost.size)
    for lo in range(0, len(demand), step):
        y = has_copy[lo:lo + step]
        nearest = np.where(y[:, None, :], cost[None, :, :], np.inf).min(axis=2)
        out[lo:lo + step] = np.einsum("io,io->i", demand[lo:lo + step], nearest)
    return out


def nearest_share(demand: np.ndarray, cost: np.ndarray, has_copy: np.ndarray) -> np.ndarray:
    """Demand each copy serves when every origin uses its cheapest copy (ties: lowest unit),
    [n, U]."""
    n, U = has_copy.shape
    out = np.zeros((n, U))
    step = max(1, CHUNK_ENTRIES // cost.size)
    for lo in range(0, n, step):
        y = has_copy[lo:lo + step]
        pick = np.where(y[:, None, :], cost[None, :, :], np.inf).argmin(axis=2)  # [n, origin]
        rows = np.repeat(np.arange(len(y)), U)
        np.add.at(out[lo:lo + step], (rows, pick.reshape(-1)), demand[lo:lo + step].reshape(-1))
    return out


@dataclass(frozen=True, eq=False)
class Classes:
    """The hierarchy with interchangeable sibling subtrees merged (same shape, demand and caps):
    merged node k stands for ``count[k]`` real nodes, ``real[k]`` (node ids, interleaved over
    the instances of its parent so that consecutive entries lie in different subtrees).  Leaf
    classes are the merged nodes over units; ``leaf_units[c]`` their units in that order."""

    parent: np.ndarray  # [merged nodes], -1 for the root (the last)
    real: tuple[np.ndarray, ...]
    leaves: np.ndarray  # merged node of every leaf class
    internal: np.ndarray  # merged internal nodes, children before parents

    @property
    def count(self) -> np.ndarray:
        return np.array([len(r) for r in self.real])

    @property
    def first(self) -> np.ndarray:
        """One real node per merged node (all of them have the same weights)."""
        return np.array([int(r[0]) for r in self.real])

    @property
    def root(self) -> int:
        return len(self.parent) - 1

    def leaf_units(self) -> list[np.ndarray]:
        return [self.real[k] for k in self.leaves.tolist()]


def classes_of(h: Hierarchy, demand: np.ndarray, cap_layer: np.ndarray,
               cap_total: np.ndarray) -> Classes:
    """Merge sibling subtrees that are alike for every expert (demand columns) and in caps."""
    U, n = h.num_units, len(h.parent)
    kids: list[list[int]] = [[] for _ in range(n)]
    for v in range(n - 1):
        kids[int(h.parent[v])].append(v)
    scale = float(np.abs(demand).max()) or 1.0
    key = np.round(demand / scale, 12)
    ids: dict[object, int] = {}
    sig = np.empty(n, dtype=np.int64)
    for v in range(n):  # children have lower ids than their parents
        if v < U:
            s: object = ("leaf", float(h.height[v]), float(cap_layer[v]), float(cap_total[v]),
                         key[:, v].tobytes())
        else:
            s = ("node", float(h.height[v]), tuple(sorted(int(sig[c]) for c in kids[v])))
        sig[v] = ids.setdefault(s, len(ids))
    parent: list[int] = []
    real: list[np.ndarray] = []
    is_leaf: list[bool] = []

    def build(instances: list[int], up: int) -> None:
        me = len(parent)
        parent.append(up)
        real.append(np.array(instances))
        is_leaf.append(instances[0] < U)
        groups: dict[int, list[tuple[int, int]]] = {}
        for inst in instances:
            seen: dict[int, int] = {}
            for c in kids[inst]:
                j = seen.get(int(sig[c]), 0)
                seen[int(sig[c])] = j + 1
                groups.setdefault(int(sig[c]), []).append((j, c))
        for members in groups.values():
            # the j-th such child of every instance, j outer: neighbours lie in other subtrees
            build([c for _, c in sorted(members, key=lambda jc: jc[0])], me)

    build([h.root], -1)
    # renumber so that children come before parents and the root is last
    order = list(range(len(parent)))[::-1]
    new = {old: k for k, old in enumerate(order)}
    par = np.array([new[parent[o]] if parent[o] >= 0 else -1 for o in order])
    reals = tuple(real[o] for o in order)
    leaf = np.array([k for k, o in enumerate(order) if is_leaf[o]])
    inner = np.array([k for k, o in enumerate(order) if not is_leaf[o]])
    return Classes(par, reals, leaf, inner)
