"""``ilp-bottleneck``: minimise the busiest network link instead of the total (a MIP).

Traffic model: tokens start on server a with weight W[a] (the origin weights), route to
expert (l, i) with probability p[l, i]; the server b holding it receives P[b] = sum p x.
Dispatch crosses the links of the route a -> b, combine those of b -> a (ECMP as routed:
``server_link_incidence``).  Busy seconds per token on directed link e:
sum_b P[b] x B[b, e], B[b, e] = sum_a W[a] (dispatch_bytes inc[a, b, e] + combine_bytes
inc[b, a, e]) / bandwidth[e].  Minimise t subject to ``link[e]``: sum_b B[b, e] P[b] <= t,
``load[b]``: sum p x - P[b] = 0 and the assignment constraints of the plain model.  Uses the
marginal activation (not per origin).  Starts from the ilp-load layout.

Solving: the LP relaxation gives a lower bound and a point with few fractional experts; they
are re-placed by a small assignment model (TU, so integral) near the LP point, which gives a
layout whose gap to the bound is reported; the ilp-load layout is kept if it is better.  When
the gap exceeds ``mip_rel_gap`` and the model is small enough, HiGHS' MIP polishes from there
within the time limit.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from placement.assignment import expert_groups
from placement.ilp import ilp_load
from placement.lp import Model, Solved, run_highs
from placement.outcome import SolverOutcome, SolveStatus
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
)
from placement.results import failed, finish
from placement.spread import spread_items
from traces.infra.errors import InputError

MIP_POLISH_MAX_COLUMNS = 200_000  # above this HiGHS rarely finishes the root LP in time
MIP_POLISH_MIN_S = 1.0  # polish only with at least this much of the time limit left


def _point(xs: np.ndarray, gw: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Full column vector (x, P, t) of an integral group-by-server assignment."""
    P = (xs * gw[:, None]).sum(axis=0)
    return np.concatenate([xs.reshape(-1), P, [(P @ B).max() if B.size else 0.0]])


def _as_solved(x: np.ndarray, bound: float, lp: Solved, tol: float) -> Solved:
    """The rounded point ``x`` (its last column is the busiest link) against the LP bound."""
    return Solved(x, SolverOutcome.from_bound(
        float(x[-1]), bound, solver_status="rounded LP relaxation", time_s=lp.outcome.time_s,
        gap_tolerance=tol,
    ))


def _round(
    x: np.ndarray, size: np.ndarray, g_layer: np.ndarray, L: int, gps: np.ndarray,
    problem: PlacementProblem, options: SolverOptions,
) -> np.ndarray:
    """An integral assignment near the LP point: keep its floors, place the rest by a TU model.

    The rest (the fractional parts) goes where the LP had most of it, within the capacities
    the floors leave; that model is an assignment (TU), so its LP is integral.
    """
    base = np.floor(x + 1e-9)
    frac = x - base
    need = size - base.sum(axis=1)
    todo = np.flatnonzero(need > 0.5)
    if todo.size == 0:
        return base
    S = x.shape[1]
    used_layer = np.zeros((L, S))
    np.add.at(used_layer, g_layer, base)
    m = Model()
    n = len(todo)
    col = m.add_cols(-frac[todo].reshape(-1) - 1e-3, 0.0, np.repeat(need[todo], S)) + np.arange(
        n * S
    )
    grp = np.repeat(np.arange(n), S)
    ss = np.tile(np.arange(S), n)
    r = m.add_rows("assign", need[todo], need[todo], n)
    m.add_entries(r + grp, col, 1.0)
    layers = g_layer[todo]
    cap_l = (gps * problem.max_per_gpu_per_layer)[None, :] - used_layer
    r = m.add_rows("cap_layer", 0.0, cap_l.reshape(-1), L * S)
    m.add_entries(r + layers[grp] * S + ss, col, 1.0)
    r = m.add_rows("cap_total", 0.0, gps * problem.slots_per_gpu - base.sum(axis=0), S)
    m.add_entries(r + ss, col, 1.0)
    sol = run_highs(m, options, integer=False)
    if sol.x is None:
        sol = run_highs(m, options, integer=True)
    if sol.x is None:
        raise RuntimeError("ilp-bottleneck: rounding the LP point failed")
    out = base.copy()
    out[todo] += np.round(sol.x[col].reshape(n, S))
    return out


def link_busy_per_load(problem: PlacementProblem) -> np.ndarray:
    """B[b, e]: busy seconds per token on link e per unit of expert load on server b."""
    inc, bw = problem.server_link_incidence, problem.link_bandwidth_bytes_per_s
    if inc is None or bw is None:
        raise InputError(
            "placement: ilp-bottleneck needs the links of every server-to-server route and"
            " their bandwidths (give a cluster: --topology or --fat-tree)"
        )
    W = np.bincount(problem.gpu_server, weights=problem.origins, minlength=problem.num_servers)
    inc = inc.astype(np.float64)
    fwd = np.einsum("a,abe->be", W, inc)  # dispatch a -> b
    back = np.einsum("a,bae->be", W, inc)  # combine b -> a
    return (problem.dispatch_bytes * fwd + problem.combine_bytes * back) / bw[None, :]


def max_link_busy(problem: PlacementProblem, layout: ExpertLayout) -> float:
    """Busy seconds per token of the busiest network link under a single-copy layout."""
    B = link_busy_per_load(problem)
    P = np.bincount(
        problem.gpu_server[layout.primary.ravel()], weights=problem.activation.ravel(),
        minlength=problem.num_servers,
    )
    return float((P @ B).max()) if B.size else 0.0


def ilp_bottleneck(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Every HiGHS call gets what is left of ``time_limit_s``, so the whole call respects it."""
    t0 = time.perf_counter()

    def left() -> float:
        return max(1e-3, options.time_limit_s - (time.perf_counter() - t0))

    if problem.num_redundant or problem.balance_eps is not None:
        raise InputError(
            "placement: ilp-bottleneck supports neither replicas nor the balance constraint"
        )
    B = link_busy_per_load(problem)
    used = np.flatnonzero(B.max(axis=0) > 0)
    B = B[:, used]
    b_scale = float(B.max()) if B.size else 1.0
    B = B / b_scale  # busy time in units of the largest coefficient (solver tolerances)
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    unit_gpus = [problem.server_gpus(s) for s in range(S)]
    gps = problem.gpus_per_server.astype(np.float64)
    w = problem.activation.reshape(-1)
    g_layer, members = expert_groups(np.zeros((L * E, 1)), w, L, E)
    n_groups = len(members)
    size = np.array([len(m) for m in members], dtype=np.float64)
    gw = w[[m[0] for m in members]]
    model = Model()
    x0 = model.add_cols(np.zeros(n_groups * S), 0.0, np.repeat(size, S), integer=True)
    x_col = x0 + np.arange(n_groups * S)
    p_col = model.add_cols(np.zeros(S), 0.0, np.inf) + np.arange(S)
    t_col = model.add_cols(np.ones(1), 0.0, np.inf)
    grp = np.repeat(np.arange(n_groups), S)
    ss = np.tile(np.arange(S), n_groups)
    r = model.add_rows("assign", size, size, n_groups)
    model.add_entries(r + grp, x_col, 1.0)
    r = model.add_rows("cap_layer", 0.0, np.tile(gps * problem.max_per_gpu_per_layer, L), L * S)
    model.add_entries(r + g_layer[grp] * S + ss, x_col, 1.0)
    r = model.add_rows("cap_total", 0.0, gps * problem.slots_per_gpu, S)
    model.add_entries(r + ss, x_col, 1.0)
    r = model.add_rows("load", 0.0, 0.0, S)
    model.add_entries(r + ss, x_col, gw[grp])
    model.add_entries(r + np.arange(S), p_col, -1.0)
    ne = len(used)
    r = model.add_rows("link", -np.inf, 0.0, ne)
    model.add_entries(r + np.repeat(np.arange(ne), S), np.tile(p_col, ne), B.T.reshape(-1))
    model.add_entries(r + np.arange(ne), np.full(ne, t_col), -1.0)
    info: dict[str, object] = {"unit": "server", "links": ne, "columns": model.num_col,
                               "objective_unit": "busy seconds per token, busiest link"}
    start_res = ilp_load(problem, replace(options, time_limit_s=left()))
    start = None
    if start_res.layout is not None:
        srv = problem.gpu_server[start_res.layout.primary.reshape(-1)]
        xs = np.zeros((n_groups, S))
        for g, m in enumerate(members):
            np.add.at(xs[g], srv[m], 1.0)
        start = _point(xs, gw, B)
        info["ilp_load_bottleneck"] = float(start[-1]) * b_scale
    # LP relaxation: a lower bound, and a point to round (few columns are fractional).
    big = model.num_col > MIP_POLISH_MAX_COLUMNS
    lp = run_highs(model, options, integer=False, lp_solver="ipm" if big else "simplex",
                   time_limit_s=left())
    if lp.x is None or lp.status is not SolveStatus.OPTIMAL:
        if start is None or lp.status is SolveStatus.INFEASIBLE:
            return failed("ilp-bottleneck", problem, options, lp.outcome, t0, info)
        # No bound in time: hand back the ilp-load layout, saying so (gap unknown).
        sol = Solved(start, lp.outcome.without_bound())
        return _result(problem, options, sol, x_col, members, w, unit_gpus, t0, info, b_scale,
                       "LP relaxation not solved within the time limit: the ilp-load layout,"
                       " no bound (raise --time-limit)")
    bound = lp.outcome.objective
    xr = _round(lp.x[x_col].reshape(n_groups, S), size, g_layer, L, gps, problem,
                replace(options, time_limit_s=left()))
    sol = _as_solved(_point(xr, gw, B), bound, lp, options.mip_rel_gap)
    if start is not None and start[-1] < sol.x[-1]:  # type: ignore[index]
        sol = _as_solved(start, bound, lp, options.mip_rel_gap)
    info["rounded_lp"] = True
    if sol.outcome.gap > options.mip_rel_gap and model.num_col <= MIP_POLISH_MAX_COLUMNS \
            and left() >= MIP_POLISH_MIN_S:
        mip = run_highs(model, options, integer=True, start=sol.x, time_limit_s=left())
        if mip.x is not None and mip.x[t_col] <= sol.x[-1] + 1e-12:  # type: ignore[index]
            # The better of the MIP's own bound and the LP's.
            best = max(bound, mip.outcome.dual_bound) if np.isfinite(mip.outcome.dual_bound) \
                else bound
            sol = Solved(mip.x, SolverOutcome.from_bound(
                float(mip.x[t_col]), best, termination=mip.outcome.termination,
                solver_status=mip.outcome.solver_status, time_s=mip.outcome.time_s,
                gap_tolerance=options.mip_rel_gap,
            ))
    assert sol.x is not None
    return _result(problem, options, sol, x_col, members, w, unit_gpus, t0, info, b_scale,
                   f"min busiest link: {sol.outcome.solver_status}, gap to the dual bound"
                   f" {sol.outcome.gap:.2g}")


def _result(
    problem: PlacementProblem, options: SolverOptions, sol: Solved, x_col: np.ndarray,
    members: list[np.ndarray], w: np.ndarray, unit_gpus: list[np.ndarray], t0: float,
    info: dict[str, object], b_scale: float, message: str,
) -> PlacementResult:
    assert sol.x is not None
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    y = np.round(sol.x[x_col].reshape(len(members), S)).astype(np.int64)
    expert_server = np.empty(L * E, dtype=np.int64)
    for g, m in enumerate(members):
        expert_server[m] = np.repeat(np.arange(S), y[g])
    gpus = spread_items(problem, np.repeat(np.arange(L), E), w, expert_server, unit_gpus)
    layout = ExpertLayout.from_primary(gpus.reshape(L, E), problem.num_gpus)
    info["bottleneck"] = max_link_busy(problem, layout)
    return finish("ilp-bottleneck", problem, options, layout, sol.outcome.scaled(b_scale), t0,
                  info, message)
