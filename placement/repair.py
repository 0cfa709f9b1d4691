"""Keep-and-repair: a layout after some GPUs failed, moving only the copies that were lost.

Every copy on a surviving GPU stays where it is (GPU indices renumbered to the smaller
cluster: ``index_map``).  The lost copies (expert i of layer l that sat on a failed GPU) go to
the *nearest free slots*: surviving GPUs that do not hold a copy of (l, i) and have room
(``max_per_gpu_per_layer`` copies of the layer, ``slots_per_gpu`` over all layers), chosen all
at once to minimise the summed distance from each copy's failed GPU in the healthy cluster
(``healthy_distance``), ties to GPUs holding fewer copies of the layer, then to lower
indices.  It is an exact
assignment (a transportation LP, totally unimodular): nearest-first one copy at a time can
fill the slots a later layer needs.  Every expert keeps as many copies as it had.

What it costs (the migration model of :mod:`placement.migration`): a repaired copy of an
expert that still has a surviving copy is a move, its weights sent from the nearest surviving
copy (:func:`placement.migration.plan_migration`); an expert that lost every copy has no copy
left on any GPU: its first new copy is *reloaded* (from host memory or storage, off the GPU
fabric), further lost copies are moves from that one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.lp import Model, is_integral, run_highs
from placement.migration import MigrationPlan, plan_migration
from placement.problem import ExpertLayout, SolverOptions
from traces.infra.errors import InputError


@dataclass(frozen=True, eq=False)
class Repair:
    layout: ExpertLayout  # on the surviving GPUs (new indices)
    lost_copies: int  # copies that sat on failed GPUs
    reloaded: int  # experts with no surviving copy: first copy reloaded off the fabric
    moves: MigrationPlan  # copies whose weights cross the fabric from a surviving copy

    @property
    def num_moves(self) -> int:
        return self.moves.num_moves


def repair_layout(
    layout: ExpertLayout,
    index_map: np.ndarray,
    healthy_distance: np.ndarray,
    failed_distance: np.ndarray,
    slots_per_gpu: int,
    max_per_gpu_per_layer: int,
    options: SolverOptions | None = None,
) -> Repair:
    """The repaired layout (module docstring).  ``index_map[g]``: new index of healthy GPU g,
    -1 where it failed; distances [healthy gpus]^2 and [surviving gpus]^2."""
    eg = layout.expert_gpus
    if index_map.shape != (layout.num_gpus,):
        raise InputError(
            f"repair: the layout is for {layout.num_gpus} GPUs but the healthy cluster has"
            f" {index_map.shape[0]}"
        )
    survivors = np.flatnonzero(index_map >= 0)
    n_new = len(survivors)
    old_of = survivors  # healthy index of every new GPU (index_map keeps the order)
    mapped = np.where(eg >= 0, index_map[np.maximum(eg, 0)], -1)
    lost = (eg >= 0) & (mapped < 0)
    L, E, _ = eg.shape
    per_layer = np.zeros((L, n_new), dtype=np.int64)
    li, _, _ = np.nonzero(mapped >= 0)
    np.add.at(per_layer, (li, mapped[mapped >= 0]), 1)
    total = per_layer.sum(axis=0)
    over = np.flatnonzero((per_layer > max_per_gpu_per_layer).any(axis=0)
                          | (total > slots_per_gpu))
    if over.size:
        raise InputError(
            f"repair: GPU {int(over[0])} of the failed cluster already holds more copies than"
            f" its {slots_per_gpu} slots ({max_per_gpu_per_layer} per layer) allow; raise"
            " --slots-per-gpu / --per-layer-per-gpu"
        )
    out = mapped.copy()
    cl, ce, cr = np.nonzero(lost)
    if cl.size:
        new_gpu = _assign(eg, out, per_layer, total, (cl, ce, cr), old_of, healthy_distance,
                          slots_per_gpu, max_per_gpu_per_layer, options or SolverOptions())
        out[cl, ce, cr] = new_gpu
    reload_at = mapped.copy()  # where the weights come from: survivors, then reloaded copies
    reloaded = 0
    for l_, e in sorted(set(zip(cl.tolist(), ce.tolist(), strict=True))):
        if (mapped[l_, e] < 0).all():
            first = int(np.flatnonzero(eg[l_, e] >= 0)[0])
            reload_at[l_, e, first] = out[l_, e, first]
            reloaded += 1
    repaired = ExpertLayout(out, n_new)
    moves = plan_migration(ExpertLayout(reload_at, n_new), repaired, failed_distance)
    return Repair(repaired, int(lost.sum()), reloaded, moves)


# ties between equally near GPUs go to the one holding fewer copies of the layer, then to
# the lower index
_FEWER_COPIES = 1e-3
_LOWER_INDEX = 1e-6


def _assign(eg: np.ndarray, out: np.ndarray, per_layer: np.ndarray, total: np.ndarray,
            lost: tuple[np.ndarray, np.ndarray, np.ndarray], old_of: np.ndarray,
            healthy_distance: np.ndarray, slots: int, cap: int,
            options: SolverOptions) -> np.ndarray:
    """New GPU of every lost copy: the cheapest assignment within the slots (an LP whose rows
    are two laminar families, copies and GPU > layer > expert capacities: totally unimodular,
    so the simplex vertex is integral)."""
    cl, ce, cr = lost
    n = per_layer.shape[1]
    c = cl.size
    cost = healthy_distance[eg[cl, ce, cr]][:, old_of]  # [copies, new gpus]
    cost = cost + _FEWER_COPIES * per_layer[cl] / max(cap, 1) + _LOWER_INDEX * np.arange(n) / n
    allowed = (per_layer[cl] < cap) & (total[None, :] < slots)
    holds = np.zeros((c, n), dtype=bool)
    for r in range(out.shape[2]):
        g = out[cl, ce, r]
        ok = g >= 0
        holds[np.flatnonzero(ok), g[ok]] = True
    allowed &= ~holds
    ci, hi = np.nonzero(allowed)
    m = Model()
    first = m.add_cols(cost[ci, hi], 0.0, 1.0)
    cols = first + np.arange(ci.size)
    row = m.add_rows("copy", 1.0, 1.0, c)
    m.add_entries(row + ci, cols, 1.0)
    layers, lidx = np.unique(cl, return_inverse=True)
    row = m.add_rows("layer", -np.inf, (cap - per_layer[layers]).ravel(), layers.size * n)
    m.add_entries(row + lidx[ci] * n + hi, cols, 1.0)
    row = m.add_rows("gpu", -np.inf, slots - total, n)
    m.add_entries(row + hi, cols, 1.0)
    pairs, pidx = np.unique(cl * eg.shape[1] + ce, return_inverse=True)
    many = np.bincount(pidx) > 1  # experts that lost several copies: on distinct GPUs
    if many.any():
        sel = many[pidx[ci]]
        dense = np.cumsum(many) - 1
        row = m.add_rows("expert", -np.inf, 1.0, int(many.sum()) * n)
        m.add_entries(row + dense[pidx[ci[sel]]] * n + hi[sel], cols[sel], 1.0)
    sol = run_highs(m, options, integer=False)
    if sol.x is None or sol.status.value not in ("optimal",):
        l_, e = int(cl[0]), int(ce[0])
        raise InputError(
            f"repair: the {c} lost copies (first: expert {e} of MoE layer position {l_}) do"
            f" not fit the free slots of the {n} surviving GPUs; raise --slots-per-gpu /"
            " --per-layer-per-gpu"
        )
    x = sol.x[cols]
    if not is_integral(x):
        raise RuntimeError("repair: the assignment LP returned a fractional vertex (a bug)")
    chosen = x > 0.5
    new_gpu = np.full(c, -1, dtype=np.int64)
    new_gpu[ci[chosen]] = hi[chosen]
    return new_gpu
