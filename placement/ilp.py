"""The paper's ILP and ILPLoad and the project's variants, solved with HiGHS (highspy).

Variables x[l, i, u] in {0, 1}: expert i of MoE layer l on unit u (a server, or a GPU when the
GPUs of a server do not cost the same).  Minimise sum cost[l, i, u] * x[l, i, u] subject to
``assign[l,i]`` (each expert placed once), ``cap_layer[l,u]`` (experts of one layer per unit:
GPUs x max_per_gpu_per_layer) and ``cap_total[u]`` (experts per unit: GPUs x slots_per_gpu).

* ``ilp`` (paper): cost = (top_k / experts) x c[u], c[u] the expected round-trip hops from a
  token's origin; ``ilp-load`` (paper's ILPLoad): measured p[l, i] x c[u].
* ``ilp-origin``: cost[l, i, u] = sum over origins o of a[l, i, o] x hops(o <-> u), with
  activation measured per origin GPU, so experts move towards the tokens that use them.
* ``ilp-bytes``: the same with seconds on the wire, dispatch_bytes x s/B(o -> u) +
  combine_bytes x s/B(u -> o), from link bandwidths along the routed paths.
* ``balance_eps`` adds ``balance[u]``: expected token load of unit u <= GPUs x (1 + eps) x mean.
* ``num_redundant`` > 0 switches to the replica model (``placement.replicas``).

Structure used for speed: each column has a 1 in one assign row, one cap_layer row and one
cap_total row; cap_layer(l, u) nests in cap_total(u), so the matrix is totally unimodular and the
LP has integral vertices: simplex gives an optimal integer layout (checked; MIP fallback).
Units whose cost columns are equal (and that have as many GPUs) are merged into one class with
summed capacities and split after by dealing its experts cyclically (every unit then gets the
floor or ceiling of each count, within caps); experts of a layer with equal cost rows are
aggregated into one integer column.  On the paper's fat trees this turns 58 x 256 x 32 binaries
into a few thousand columns.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from placement.lp import Model, is_integral, run_highs
from placement.outcome import SolverOutcome, SolveStatus
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)
from placement.spread import spread_items
from traces.infra.errors import InputError

GPU_LEVEL_MAX_COLUMNS = 1_000_000  # balance fallback per GPU only below this many binaries


def server_cost(problem: PlacementProblem) -> np.ndarray:
    """c[s]: mean over the server's GPUs of the expected round-trip distance from origins."""
    gc = problem.gpu_cost()
    counts = np.bincount(problem.gpu_server)
    return np.bincount(problem.gpu_server, weights=gc) / counts


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


def _expert_groups(
    cost_k: np.ndarray, weights: np.ndarray, L: int, E: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Experts of one layer with equal cost rows and weights share a column.

    Returns the layer of every group and its members (flat expert indices l * E + i).
    """
    key = np.hstack([
        np.repeat(np.arange(L), E)[:, None], _key(cost_k), _key(weights.reshape(-1, 1))
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


def _infeasible(problem: PlacementProblem) -> str:
    eps = problem.balance_eps
    if eps is not None:
        mean = problem.activation.sum() / problem.num_gpus
        return (
            f"no layout keeps every GPU's expected token load within (1 + {eps:g}) x the mean"
            f" ({(1 + eps) * mean:.4g} routed tokens per token) with {problem.slots_per_gpu}"
            f" slots per GPU and at most {problem.max_per_gpu_per_layer} experts of a layer"
            " per GPU; raise the balance epsilon or add slots"
        )
    return (
        f"no layout fits: {problem.num_gpus} GPUs with {problem.slots_per_gpu} slots each and at"
        f" most {problem.max_per_gpu_per_layer} experts of one layer per GPU cannot hold"
        f" {problem.num_layers} layers x {problem.num_experts} experts"
    )


def failed(
    name: str, problem: PlacementProblem, options: SolverOptions, outcome: SolverOutcome,
    t0: float, info: dict[str, object],
) -> PlacementResult:
    """A result without a layout, with the reason in words."""
    elapsed = time.perf_counter() - t0
    status = outcome.status
    if status.has_layout:  # the solver had a layout that this strategy could not use
        status = SolveStatus.NO_SOLUTION
    if status is SolveStatus.INFEASIBLE:
        msg = _infeasible(problem)
    elif status is SolveStatus.NO_SOLUTION:
        msg = (
            f"HiGHS stopped ({outcome.solver_status}) after {elapsed:.3g} s before"
            f" finding any layout; raise time_limit_s (now {options.time_limit_s})"
        )
    else:
        msg = f"HiGHS: {outcome.solver_status}"
    return PlacementResult(
        strategy=name, status=status, layout=None, objective=float("nan"),
        runtime_s=elapsed, options=options, message=msg, info=info, solver=outcome,
    )


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


def solve_assignment(
    problem: PlacementProblem,
    options: SolverOptions,
    name: str,
    cost_g: np.ndarray,
    force_gpus: bool = False,
    rt: np.ndarray | None = None,
) -> PlacementResult:
    """The TU assignment model for a cost [layers * experts, gpus] (plus optional balance)."""
    t0 = time.perf_counter()
    L, E = problem.num_layers, problem.num_experts
    rt = problem.round_trip("hops") if rt is None else rt
    balance = problem.balance_eps is not None
    unit_gpus, level = unit_partition(problem, rt, force_gpus)
    rep = np.array([m[0] for m in unit_gpus])
    cost_u = cost_g[:, rep]
    classes = _classes(cost_u, unit_gpus, merge=not balance)
    K = len(classes)
    gps_k = np.array([sum(len(unit_gpus[u]) for u in c) for c in classes], dtype=np.float64)
    cost_k = cost_u[:, [c[0] for c in classes]]
    w = problem.activation.reshape(-1)
    g_layer, members = _expert_groups(cost_k, w, L, E)
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
    eps = problem.balance_eps
    if eps is not None:
        mean = w.sum() / problem.num_gpus
        r_bal = model.add_rows("balance", 0.0, gps_k * (1 + eps) * mean, K)
        model.add_entries(r_bal + kk, col, w[first][grp])
    info: dict[str, object] = {
        "unit": level, "units": len(unit_gpus), "classes": K, "columns": model.num_col,
        "rows": model.num_row,
    }
    if eps is None:
        sol = run_highs(model, options, integer=False)
        integral = sol.x is not None and is_integral(sol.x)
        # An integral vertex is a layout; an LP stopped by a limit leaves no time for a MIP.
        lp_settled = integral or sol.status is SolveStatus.INFEASIBLE \
            or sol.outcome.termination.is_limit
    else:  # balance rows break total unimodularity: a MIP from a balanced start
        sol, integral, lp_settled = None, False, False
    info["lp_integral"] = integral
    if not lp_settled:  # balance rows or a fractional vertex
        start = None
        if eps is not None:
            bal = balanced_gpus(problem, eps)
            info["balanced_start"] = bal is not None
            if bal is not None:
                start = _start_columns(bal, problem.num_gpus, unit_gpus, classes, members, K)
        left = max(1e-3, options.time_limit_s - (time.perf_counter() - t0))
        sol = run_highs(model, options, integer=True, start=start, time_limit_s=left)
        info["mip"] = True
    assert sol is not None
    if sol.x is None or not sol.status.has_layout or not (integral or info.get("mip")):
        return failed(name, problem, options, sol.outcome, t0, info)
    y = np.round(sol.x[col].reshape(n_groups, K)).astype(np.int64)
    expert_class = np.empty(L * E, dtype=np.int64)
    for g, m in enumerate(members):
        expert_class[m] = np.repeat(np.arange(K), y[g])
    item_layer = np.repeat(np.arange(L), E)
    expert_unit = np.empty(L * E, dtype=np.int64)
    for k, units in enumerate(classes):
        items = np.flatnonzero(expert_class == k)
        if items.size:
            expert_unit[items] = _deal(items, item_layer, w, units)
    gpus = spread_items(problem, item_layer, w, expert_unit, unit_gpus)
    layout = ExpertLayout.from_primary(gpus.reshape(L, E), problem.num_gpus)
    if eps is not None and level == "server":
        cap = (1 + eps) * w.sum() / problem.num_gpus
        if (gpu_loads(problem, layout) > cap * (1 + 1e-9)).any():
            # Server-level balance held but the split over GPUs did not: solve per GPU with
            # the time that is left, if that model is not too large.
            left = options.time_limit_s - (time.perf_counter() - t0)
            if left > 1 and L * E * problem.num_gpus <= GPU_LEVEL_MAX_COLUMNS:
                opts = replace(options, time_limit_s=left)
                res = solve_assignment(problem, opts, name, cost_g, force_gpus=True, rt=rt)
                res.info["server_level_split_failed"] = True
                return replace(res, options=options, runtime_s=time.perf_counter() - t0)
            info["server_level_split_failed"] = True
            bal = balanced_gpus(problem, eps)
            no_bound = sol.outcome.without_bound()
            if bal is None:
                return failed(name, problem, options, no_bound, t0, info)
            fallback = ExpertLayout.from_primary(bal.reshape(L, E), problem.num_gpus)
            return finish(name, problem, options, fallback, no_bound, t0, info,
                          "server-level balance did not split over GPUs in time: the balanced"
                          " greedy layout (hottest first to the least loaded GPU), no bound")
    proven = integral and sol.status is SolveStatus.OPTIMAL
    message = "LP relaxation integral (network-flow structure)" if proven else ""
    return finish(name, problem, options, layout, sol.outcome, t0, info, message)


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


def _start_columns(
    gpu: np.ndarray, G: int, unit_gpus: list[np.ndarray], classes: list[list[int]],
    members: list[np.ndarray], K: int,
) -> np.ndarray:
    """Columns (experts of each group per class) of a GPU-level layout."""
    unit_of_gpu = np.empty(G, dtype=np.int64)
    for u, m in enumerate(unit_gpus):
        unit_of_gpu[m] = u
    class_of_unit = np.empty(len(unit_gpus), dtype=np.int64)
    for k, c in enumerate(classes):
        class_of_unit[c] = k
    x = np.zeros((len(members), K))
    cls = class_of_unit[unit_of_gpu[gpu]]
    for gi, m in enumerate(members):
        np.add.at(x[gi], cls[m], 1.0)
    return x.reshape(-1)


def finish(
    name: str,
    problem: PlacementProblem,
    options: SolverOptions,
    layout: ExpertLayout,
    outcome: SolverOutcome,
    t0: float,
    info: dict[str, object],
    message: str = "",
) -> PlacementResult:
    """A result with a layout: its independent cost, the solver's outcome, a message."""
    if not message:
        if outcome.status is SolveStatus.FEASIBLE:
            message = (
                f"HiGHS stopped ({outcome.solver_status}) with a layout, relative gap"
                f" {outcome.gap:.3g} to the dual bound"
            )
        elif outcome.status is SolveStatus.FEASIBLE_NO_BOUND:
            message = f"HiGHS stopped ({outcome.solver_status}) with a layout but no bound"
        else:
            message = f"MIP, HiGHS {outcome.solver_status}"
    return PlacementResult(
        strategy=name,
        status=outcome.status,
        layout=layout,
        objective=expected_cost(problem, layout),
        runtime_s=time.perf_counter() - t0,
        options=options,
        message=message,
        info=info,
        solver=outcome,
    )


def _uniform(problem: PlacementProblem) -> np.ndarray:
    k = problem.activation.sum(axis=1, keepdims=True)
    return np.broadcast_to(k / problem.num_experts, problem.activation.shape).copy()


def _solve(
    problem: PlacementProblem, options: SolverOptions, name: str, metric: str,
    weights: np.ndarray, per_origin: bool,
) -> PlacementResult:
    from placement.replicas import solve_replicas

    if problem.num_redundant > 0:
        if problem.balance_eps is not None:
            raise InputError(
                "placement: replicas together with the compute-balance constraint are not"
                " supported; drop --balance-eps or --replicas"
            )
        return solve_replicas(problem, options, name, metric, weights, per_origin)
    rt = problem.round_trip(metric)
    cost_g = cost_matrix(problem, metric, weights, per_origin)
    res = solve_assignment(problem, options, name, cost_g, rt=rt)
    res.info["metric"] = metric
    return res


def ilp_uniform(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILP: every expert equally likely, p = top_k / experts."""
    return _solve(problem, options, "ilp", "hops", _uniform(problem), per_origin=False)


def ilp_load(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILPLoad: measured activation p[l, i]."""
    return _solve(problem, options, "ilp-load", "hops", problem.activation, per_origin=False)


def ilp_origin(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """ILPLoad with activation per origin GPU: experts move towards the tokens using them."""
    return _solve(problem, options, "ilp-origin", "hops", problem.activation, per_origin=True)


def ilp_bytes(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Seconds on the wire (bytes x 1/bandwidth along the routes) instead of hops."""
    per_origin = problem.origin_activation is not None
    return _solve(problem, options, "ilp-bytes", "wire", problem.activation, per_origin)
