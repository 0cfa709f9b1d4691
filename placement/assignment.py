"""The assignment model every single-copy ILP shares (TU: the LP has integral vertices).

Variables: experts of a group (same layer, equal cost row and weight) per class of units
(units with equal cost column and size), minimise sum cost x subject to ``assign`` (each
expert placed once), ``cap_layer[l, k]`` and ``cap_total[k]`` (the class's GPUs x caps), and
with ``balance_eps`` the ``balance[k]`` rows (which break total unimodularity: then a MIP
from the balanced greedy start).  A class's experts are dealt cyclically over its units, and
a unit's over its GPUs (``placement.spread``).  Used by ``placement.ilp`` (the strategies),
``placement.replicas`` (the warm start) and ``placement.bottleneck`` (the groups).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from placement.lp import Model, Solved, is_integral, run_highs
from placement.outcome import SolveStatus
from placement.problem import ExpertLayout, PlacementProblem, PlacementResult, SolverOptions
from placement.results import failed, finish
from placement.spread import spread_items
from traces.infra.errors import InputError

GPU_LEVEL_MAX_COLUMNS = 1_000_000  # balance fallback per GPU only below this many binaries


def unit_partition(
    problem: PlacementProblem, rt: np.ndarray, force_gpus: bool = False
) -> tuple[list[np.ndarray], str]:
    """Servers as units when every GPU of a server has the same cost row and column in ``rt``.

    Otherwise every GPU is its own unit (exact, larger model).
    """
    servers = [problem.server_gpus(s) for s in range(problem.num_servers)]
    if not force_gpus and all(
        np.array_equal(rt[:, m], np.repeat(rt[:, m[:1]], len(m), axis=1))
        and np.array_equal(rt[m, :], np.repeat(rt[m[:1], :], len(m), axis=0))
        for m in servers
    ):
        return servers, "server"
    return [np.array([g]) for g in range(problem.num_gpus)], "gpu"


def cost_matrix(
    problem: PlacementProblem, metric: str, weights: np.ndarray, per_origin: bool
) -> np.ndarray:
    """Expected cost per token of each expert on each GPU, [layers * experts, gpus]."""
    rt = problem.round_trip(metric)
    if per_origin:
        if problem.origin_activation is None:
            raise InputError(
                "placement: ilp-origin needs activation per origin GPU (origin_activation);"
                " give a trace with origins or use ilp-load"
            )
        return problem.origin_split().reshape(-1, problem.num_gpus) @ rt
    return weights.reshape(-1)[:, None] * (problem.origins @ rt)[None, :]


def _key(a: np.ndarray) -> np.ndarray:
    scale = float(np.abs(a).max()) or 1.0
    return np.round(a / scale, 9)


def _classes(
    cost_u: np.ndarray, unit_gpus: list[np.ndarray], merge: bool
) -> list[list[int]]:
    """Units grouped into classes of equal size and equal cost column.

    Candidates by two fixed random projections of the columns, then checked exactly: a class
    only ever holds units whose rounded columns are identical.
    """
    U = len(unit_gpus)
    if not merge:
        return [[u] for u in range(U)]
    key = _key(cost_u)
    proj = key.T @ np.random.default_rng(12345).standard_normal((key.shape[0], 2))
    sizes = np.array([len(m) for m in unit_gpus], dtype=np.float64)
    _, inv = np.unique(np.column_stack([sizes, np.round(proj, 6)]), axis=0, return_inverse=True)
    out: dict[int, list[int]] = {}
    for u, k in enumerate(inv.reshape(-1)):
        out.setdefault(int(k), []).append(u)
    classes: list[list[int]] = []
    for units in out.values():
        for u in units:
            for c in classes:
                if c[0] in units and np.array_equal(key[:, c[0]], key[:, u]):
                    c.append(u)
                    break
            else:
                classes.append([u])
    return sorted(classes)


def expert_groups(
    cost_k: np.ndarray, weights: np.ndarray, L: int, E: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Experts of one layer with equal cost rows and weights share a column.

    ``weights``: one column per expert, or several ([L * E, n]).  Returns the layer of every
    group and its members (flat expert indices l * E + i).
    """
    key = np.hstack([
        np.repeat(np.arange(L), E)[:, None], _key(cost_k), _key(weights.reshape(L * E, -1))
    ])
    _, inv = np.unique(key, axis=0, return_inverse=True)  # sorted by layer first
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    members = np.split(order, bounds)
    g_layer = np.array([m[0] // E for m in members], dtype=np.int64)
    return g_layer, members


def _deal(
    items: np.ndarray, item_layer: np.ndarray, item_weight: np.ndarray, units: list[int]
) -> np.ndarray:
    """Deal the items of one class cyclically over its identical units (layer, then hottest)."""
    order = items[np.lexsort((items, -item_weight[items], item_layer[items]))]
    out = np.empty(len(items), dtype=np.int64)
    unit_of = np.asarray(units, dtype=np.int64)[np.arange(len(order)) % len(units)]
    out[np.searchsorted(items, order)] = unit_of
    return out


def gpu_loads(problem: PlacementProblem, layout: ExpertLayout) -> np.ndarray:
    """Expected routed tokens per token on each GPU, summed over layers (nearest replica)."""
    eg = layout.expert_gpus
    if eg.shape[2] == 1:
        return np.bincount(
            eg[:, :, 0].ravel(), weights=problem.activation.ravel(), minlength=problem.num_gpus
        )
    d = problem.distance.T[np.maximum(eg, 0)]  # [L, E, R, G] origin -> replica
    d = np.where(eg[..., None] >= 0, d, np.inf)
    host = np.take_along_axis(np.maximum(eg, 0), np.argmin(d, axis=2), axis=2)  # [L, E, G]
    return np.bincount(
        host.ravel(), weights=problem.origin_split().ravel(), minlength=problem.num_gpus
    )


@dataclass(frozen=True, eq=False)
class _Assignment:
    """The built model and what maps its columns back to experts and GPUs."""

    model: Model
    col: np.ndarray  # column of (group, class), [groups * classes]
    unit_gpus: list[np.ndarray]
    level: str  # "server" or "gpu"
    classes: list[list[int]]
    members: list[np.ndarray]  # flat expert ids of each group

    def info(self) -> dict[str, object]:
        return {
            "unit": self.level, "units": len(self.unit_gpus), "classes": len(self.classes),
            "columns": self.model.num_col, "rows": self.model.num_row,
        }


def _tie_weights(problem: PlacementProblem, weights: np.ndarray | None) -> np.ndarray:
    """The activation the model's cost is built from (default: the measured one), [L * E]."""
    w = problem.activation if weights is None else weights
    return np.asarray(w, dtype=np.float64).reshape(-1)


def _build(
    problem: PlacementProblem, cost_g: np.ndarray, rt: np.ndarray, force_gpus: bool,
    weights: np.ndarray | None = None,
) -> _Assignment:
    L, E = problem.num_layers, problem.num_experts
    eps = problem.balance_eps
    unit_gpus, level = unit_partition(problem, rt, force_gpus)
    cost_u = cost_g[:, np.array([m[0] for m in unit_gpus])]
    classes = _classes(cost_u, unit_gpus, merge=eps is None)
    K = len(classes)
    gps_k = np.array([sum(len(unit_gpus[u]) for u in c) for c in classes], dtype=np.float64)
    cost_k = cost_u[:, [c[0] for c in classes]]
    w = problem.activation.reshape(-1)  # measured load: the balance rows
    w_tie = _tie_weights(problem, weights)
    g_layer, members = expert_groups(cost_k, w_tie if eps is None else np.column_stack(
        [w_tie, w]), L, E)
    n_groups = len(members)
    size = np.array([len(m) for m in members], dtype=np.float64)
    first = np.array([m[0] for m in members])
    model = Model()
    cols = model.add_cols(cost_k[first].reshape(-1), 0.0, np.repeat(size, K), integer=True)
    col = cols + np.arange(n_groups * K)
    grp = np.repeat(np.arange(n_groups), K)
    kk = np.tile(np.arange(K), n_groups)
    r_assign = model.add_rows("assign", size, size, n_groups)
    model.add_entries(r_assign + grp, col, 1.0)
    r_layer = model.add_rows("cap_layer", 0.0, np.tile(gps_k * problem.max_per_gpu_per_layer, L),
                             L * K)
    model.add_entries(r_layer + g_layer[grp] * K + kk, col, 1.0)
    r_total = model.add_rows("cap_total", 0.0, gps_k * problem.slots_per_gpu, K)
    model.add_entries(r_total + kk, col, 1.0)
    if eps is not None:
        mean = w.sum() / problem.num_gpus
        r_bal = model.add_rows("balance", 0.0, gps_k * (1 + eps) * mean, K)
        model.add_entries(r_bal + kk, col, w[first][grp])
    return _Assignment(model, col, unit_gpus, level, classes, members)


def _solve(
    problem: PlacementProblem, options: SolverOptions, a: _Assignment, t0: float,
    info: dict[str, object],
) -> tuple[Solved, bool]:
    """The LP (its vertex is integral without balance rows), else a MIP; (solution, integral).

    A MIP runs for balance rows or a fractional vertex, from the balanced greedy start when
    there is one; an LP stopped by a limit leaves no time for it.
    """
    eps = problem.balance_eps
    integral, sol = False, None
    if eps is None:
        sol = run_highs(a.model, options, integer=False)
        integral = sol.x is not None and is_integral(sol.x)
        info["lp_integral"] = integral
        if integral or sol.status is SolveStatus.INFEASIBLE or sol.outcome.termination.is_limit:
            return sol, integral
    else:
        info["lp_integral"] = False
    start = None
    if eps is not None:
        bal = balanced_gpus(problem, eps)
        info["balanced_start"] = bal is not None
        if bal is not None:
            start = _start_columns(bal, problem.num_gpus, a)
    left = max(1e-3, options.time_limit_s - (time.perf_counter() - t0))
    info["mip"] = True
    return run_highs(a.model, options, integer=True, start=start, time_limit_s=left), True


def _layout(
    problem: PlacementProblem, a: _Assignment, x: np.ndarray, weights: np.ndarray | None = None
) -> ExpertLayout:
    """Experts per (group, class) -> a unit per expert (dealt) -> a GPU per expert.

    Dealt and spread by the model's own activation (``weights``), so a model that ignores
    load (the paper's ``ilp``) also breaks its ties independently of load.
    """
    L, E = problem.num_layers, problem.num_experts
    K = len(a.classes)
    w = _tie_weights(problem, weights)
    y = np.round(x[a.col].reshape(len(a.members), K)).astype(np.int64)
    expert_class = np.empty(L * E, dtype=np.int64)
    for g, m in enumerate(a.members):
        expert_class[m] = np.repeat(np.arange(K), y[g])
    item_layer = np.repeat(np.arange(L), E)
    expert_unit = np.empty(L * E, dtype=np.int64)
    for k, units in enumerate(a.classes):
        items = np.flatnonzero(expert_class == k)
        if items.size:
            expert_unit[items] = _deal(items, item_layer, w, units)
    gpus = spread_items(problem, item_layer, w, expert_unit, a.unit_gpus)
    return ExpertLayout.from_primary(gpus.reshape(L, E), problem.num_gpus)


def solve_assignment(
    problem: PlacementProblem,
    options: SolverOptions,
    name: str,
    cost_g: np.ndarray,
    force_gpus: bool = False,
    rt: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> PlacementResult:
    """The TU assignment model for a cost [layers * experts, gpus] (plus optional balance).

    ``weights``: the activation ``cost_g`` was built from (default: the measured one); experts
    of equal cost are told apart, dealt and spread by it.
    """
    t0 = time.perf_counter()
    rt = problem.round_trip("hops") if rt is None else rt
    a = _build(problem, cost_g, rt, force_gpus, weights)
    info = a.info()
    sol, usable = _solve(problem, options, a, t0, info)
    if sol.x is None or not sol.status.has_layout or not usable:
        return failed(name, problem, options, sol.outcome, t0, info)
    layout = _layout(problem, a, sol.x, weights)
    eps = problem.balance_eps
    if eps is not None and a.level == "server":
        cap = (1 + eps) * problem.activation.sum() / problem.num_gpus
        if (gpu_loads(problem, layout) > cap * (1 + 1e-9)).any():
            return _balance_per_gpu(problem, options, name, cost_g, rt, sol, t0, info, weights)
    proven = not info.get("mip") and sol.status is SolveStatus.OPTIMAL
    message = "LP relaxation integral (network-flow structure)" if proven else ""
    return finish(name, problem, options, layout, sol.outcome, t0, info, message)


def _balance_per_gpu(
    problem: PlacementProblem, options: SolverOptions, name: str, cost_g: np.ndarray,
    rt: np.ndarray, sol: Solved, t0: float, info: dict[str, object],
    weights: np.ndarray | None = None,
) -> PlacementResult:
    """Server-level balance held but the split over GPUs did not: solve per GPU with the time
    that is left if that model is not too large, else the balanced greedy layout (no bound)."""
    assert problem.balance_eps is not None
    L, E = problem.num_layers, problem.num_experts
    left = options.time_limit_s - (time.perf_counter() - t0)
    if left > 1 and L * E * problem.num_gpus <= GPU_LEVEL_MAX_COLUMNS:
        opts = replace(options, time_limit_s=left)
        res = solve_assignment(problem, opts, name, cost_g, force_gpus=True, rt=rt,
                               weights=weights)
        res.info["server_level_split_failed"] = True
        return replace(res, options=options, runtime_s=time.perf_counter() - t0)
    info["server_level_split_failed"] = True
    bal = balanced_gpus(problem, problem.balance_eps)
    no_bound = sol.outcome.without_bound()
    if bal is None:
        return failed(name, problem, options, no_bound, t0, info)
    fallback = ExpertLayout.from_primary(bal.reshape(L, E), problem.num_gpus)
    return finish(name, problem, options, fallback, no_bound, t0, info,
                  "server-level balance did not split over GPUs in time: the balanced"
                  " greedy layout (hottest first to the least loaded GPU), no bound")


def balanced_gpus(problem: PlacementProblem, eps: float) -> np.ndarray | None:
    """GPU per expert [L * E] meeting the balance bound, or None: hottest first, least loaded.

    Longest processing time first over all layers, within the per-layer and slot caps.
    """
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    w = problem.activation.reshape(-1)
    per = np.zeros((L, G), dtype=np.int64)
    free = np.full(G, problem.slots_per_gpu, dtype=np.int64)
    load = np.zeros(G)
    gpu = np.empty(L * E, dtype=np.int64)
    for flat in np.lexsort((np.arange(L * E), -w)):
        li = int(flat) // E
        ok = np.flatnonzero((per[li] < problem.max_per_gpu_per_layer) & (free > 0))
        if ok.size == 0:
            return None
        g = int(ok[np.argmin(load[ok])])
        gpu[flat] = g
        per[li, g] += 1
        free[g] -= 1
        load[g] += w[flat]
    if load.max() > (1 + eps) * w.sum() / G:
        return None
    return gpu


def _start_columns(gpu: np.ndarray, G: int, a: _Assignment) -> np.ndarray:
    """Columns (experts of each group per class) of a GPU-level layout."""
    unit_of_gpu = np.empty(G, dtype=np.int64)
    for u, m in enumerate(a.unit_gpus):
        unit_of_gpu[m] = u
    class_of_unit = np.empty(len(a.unit_gpus), dtype=np.int64)
    for k, c in enumerate(a.classes):
        class_of_unit[c] = k
    x = np.zeros((len(a.members), len(a.classes)))
    cls = class_of_unit[unit_of_gpu[gpu]]
    for gi, m in enumerate(a.members):
        np.add.at(x[gi], cls[m], 1.0)
    return x.reshape(-1)
