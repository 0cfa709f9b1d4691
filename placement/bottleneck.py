"""``ilp-bottleneck``: minimise the busiest network link instead of the total (a MIP).

Traffic model: tokens start on server a with weight W[a] (the origin weights), route to
expert (l, i) with probability p[l, i]; the server b holding it receives P[b] = sum p x.
Dispatch crosses the links of the route a -> b, combine those of b -> a (ECMP as routed:
``server_link_incidence``).  Busy seconds per token on directed link e:
sum_b P[b] x B[b, e], B[b, e] = sum_a W[a] (dispatch_bytes inc[a, b, e] + combine_bytes
inc[b, a, e]) / bandwidth[e].  Minimise t subject to ``link[e]``: sum_b B[b, e] P[b] <= t,
``load[b]``: sum p x - P[b] = 0 and the assignment constraints of the plain model.  Uses the
marginal activation (not per origin).  Starts from the ilp-load layout.

Solving (``placement.load_polytope``): link loads depend on a layout only through the server
loads P, so the model is solved in P-space.  Column generation over the load polytope (its
vertices: every layer's hottest experts on the cheapest servers of one server order, found by
sorting) gives the LP relaxation's value and a lower bound LB(mu) valid for every layout; an
integral layout is built near the master's load vector (hottest first to the server furthest
below target, then swaps within a layer); the ilp-load layout is kept if it is better.  GPUs
within a server are then dealt by ``placement.spread``: exact, since no network link sees
which GPU of a server holds an expert.  When the gap exceeds ``mip_rel_gap`` and the model is
small, HiGHS' MIP polishes from there within the time limit (and may prove optimality).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from placement.assignment import expert_groups
from placement.ilp import ilp_load
from placement.load_polytope import (
    MASTER_SHARE,
    LoadPolytope,
    layout_from_columns,
    layout_near,
    refine_swaps,
    solve_master,
)
from placement.lp import Model, run_highs
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


def _caps(problem: PlacementProblem) -> tuple[np.ndarray, np.ndarray]:
    """Experts of one layer and experts in all per server: (cap_layer, cap_total), [S]."""
    gps = problem.gpus_per_server.astype(np.int64)
    return gps * problem.max_per_gpu_per_layer, gps * problem.slots_per_gpu


def _server_loads(problem: PlacementProblem, server: np.ndarray) -> np.ndarray:
    return np.bincount(server.ravel(), weights=problem.activation.ravel(),
                       minlength=problem.num_servers)


def _mip_model(
    problem: PlacementProblem, B: np.ndarray
) -> tuple[Model, np.ndarray, list[np.ndarray], int]:
    """The full MIP over (expert group, server) counts: (model, x columns, groups, t column)."""
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    cap_layer, cap_total = _caps(problem)
    w = problem.activation.reshape(-1)
    g_layer, members = expert_groups(np.zeros((L * E, 1)), w, L, E)
    n_groups = len(members)
    size = np.array([len(m) for m in members], dtype=np.float64)
    gw = w[[m[0] for m in members]]
    model = Model()
    x_col = model.add_cols(np.zeros(n_groups * S), 0.0, np.repeat(size, S), integer=True) \
        + np.arange(n_groups * S)
    p_col = model.add_cols(np.zeros(S), 0.0, np.inf) + np.arange(S)
    t_col = model.add_cols(np.ones(1), 0.0, np.inf)
    grp = np.repeat(np.arange(n_groups), S)
    ss = np.tile(np.arange(S), n_groups)
    r = model.add_rows("assign", size, size, n_groups)
    model.add_entries(r + grp, x_col, 1.0)
    r = model.add_rows("cap_layer", 0.0, np.tile(cap_layer, L), L * S)
    model.add_entries(r + g_layer[grp] * S + ss, x_col, 1.0)
    r = model.add_rows("cap_total", 0.0, cap_total, S)
    model.add_entries(r + ss, x_col, 1.0)
    r = model.add_rows("load", 0.0, 0.0, S)
    model.add_entries(r + ss, x_col, gw[grp])
    model.add_entries(r + np.arange(S), p_col, -1.0)
    ne = B.shape[1]
    r = model.add_rows("link", -np.inf, 0.0, ne)
    model.add_entries(r + np.repeat(np.arange(ne), S), np.tile(p_col, ne), B.T.reshape(-1))
    model.add_entries(r + np.arange(ne), np.full(ne, t_col), -1.0)
    return model, x_col, members, t_col


def _mip_point(
    problem: PlacementProblem, server: np.ndarray, members: list[np.ndarray], B: np.ndarray
) -> np.ndarray:
    """Column vector (x, P, t) of a layout given as the server of every expert."""
    S = problem.num_servers
    flat = server.reshape(-1)
    xs = np.zeros((len(members), S))
    for g, m in enumerate(members):
        np.add.at(xs[g], flat[m], 1.0)
    P = _server_loads(problem, server)
    return np.concatenate([xs.reshape(-1), P, [(P @ B).max() if B.size else 0.0]])


def _mip_servers(
    problem: PlacementProblem, x: np.ndarray, x_col: np.ndarray, members: list[np.ndarray]
) -> np.ndarray:
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    y = np.round(x[x_col].reshape(len(members), S)).astype(np.int64)
    server = np.empty(L * E, dtype=np.int64)
    for g, m in enumerate(members):
        server[m] = np.repeat(np.arange(S), y[g])
    return server.reshape(L, E)


def ilp_bottleneck(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Dantzig-Wolfe bound, a layout near the master's loads (``placement.load_polytope``),
    the ilp-load layout if that is better, and HiGHS' MIP on small models while the gap is
    open.  Every step gets what is left of ``time_limit_s``, so the whole call respects it."""
    t0 = time.perf_counter()
    deadline = t0 + options.time_limit_s

    def left() -> float:
        return max(1e-3, deadline - time.perf_counter())

    if problem.num_redundant or problem.balance_eps is not None:
        raise InputError(
            "placement: ilp-bottleneck supports neither replicas nor the balance constraint"
        )
    B = link_busy_per_load(problem)
    B = B[:, np.flatnonzero(B.max(axis=0) > 0)]
    b_scale = float(B.max()) if B.size else 1.0
    B = B / b_scale  # busy time in units of the largest coefficient (solver tolerances)
    cap_layer, cap_total = _caps(problem)
    act = problem.activation
    info: dict[str, object] = {"unit": "server", "links": B.shape[1],
                               "objective_unit": "busy seconds per token, busiest link"}
    start_res = ilp_load(problem, replace(options, time_limit_s=left()))
    if start_res.status is SolveStatus.INFEASIBLE and start_res.solver is not None:
        return failed("ilp-bottleneck", problem, options, start_res.solver, t0, info)
    starts = []
    if start_res.layout is not None:
        start_server = problem.gpu_server[start_res.layout.primary]
        starts.append(_server_loads(problem, start_server))
        info["ilp_load_bottleneck"] = float((starts[0] @ B).max(initial=0.0)) * b_scale
    if B.shape[1] == 0:  # no network link carries traffic: every layout is optimal
        if not starts:
            return failed("ilp-bottleneck", problem, options, start_res.solver or
                          SolverOutcome.from_bound(np.nan, np.nan), t0, info)
        return _result(problem, options, start_server, SolverOutcome.from_bound(0.0, 0.0), t0,
                       info,
                       "no network link carries traffic: every layout is optimal")
    t_load = time.perf_counter()
    info["ilp_load_s"] = t_load - t0
    master_end = time.perf_counter() + MASTER_SHARE * max(0.0, deadline - time.perf_counter())
    master = solve_master(LoadPolytope.of(act, cap_layer), master_end, options.threads,
                          tuple(starts), B=B)
    info.update(master_columns=master.columns, master_iterations=master.iterations,
                master_converged=master.converged,
                lp_relaxation=master.master_value * b_scale if master.converged else None)
    info["bound_s"] = time.perf_counter() - t_load
    near = layout_from_columns(act, cap_layer, cap_total, master)
    if near is None:
        near = layout_near(act, cap_layer, cap_total, master.target)
    cost = np.inf
    if near is not None:
        good = master.bound * (1 + options.mip_rel_gap)
        server, info["swap_moves"] = refine_swaps(
            act, near, cap_layer, cap_total, master.target, deadline,
            lambda P: float((P @ B).max()) <= good)
        cost = float((_server_loads(problem, server) @ B).max())
    elif not starts:
        return failed("ilp-bottleneck", problem, options, start_res.solver or
                      SolverOutcome.from_bound(np.nan, np.nan), t0, info)
    if starts and float((starts[0] @ B).max()) < cost:
        server, cost = start_server, float((starts[0] @ B).max())
        info["kept_ilp_load"] = True
    outcome = SolverOutcome.from_bound(cost, master.bound, solver_status="Dantzig-Wolfe bound",
                                       time_s=time.perf_counter() - t0,
                                       gap_tolerance=options.mip_rel_gap)
    small = act.size * problem.num_servers <= MIP_POLISH_MAX_COLUMNS
    if outcome.gap > options.mip_rel_gap and small and left() >= MIP_POLISH_MIN_S:
        server, outcome = _mip_polish(problem, B, options, server, outcome, left(), t0)
        info["mip"] = True
    return _result(problem, options, server, outcome.scaled(b_scale), t0, info,
                   f"min busiest link: {outcome.solver_status}, gap to the lower bound"
                   f" {outcome.gap:.2g}")


def _mip_polish(problem: PlacementProblem, B: np.ndarray, options: SolverOptions,
                server: np.ndarray, outcome: SolverOutcome, time_limit_s: float, t0: float
                ) -> tuple[np.ndarray, SolverOutcome]:
    """HiGHS' MIP started from ``server`` (whose busiest link and bound ``outcome`` holds):
    its layout when no worse, with the better of the two bounds."""
    cost, bound = outcome.objective, outcome.dual_bound
    model, x_col, members, t_col = _mip_model(problem, B)
    mip = run_highs(model, options, integer=True,
                    start=_mip_point(problem, server, members, B), time_limit_s=time_limit_s)
    if mip.x is None or mip.x[t_col] > cost + 1e-12:
        return server, outcome
    server, cost = _mip_servers(problem, mip.x, x_col, members), float(mip.x[t_col])
    if np.isfinite(mip.outcome.dual_bound):
        bound = max(bound, mip.outcome.dual_bound)
    return server, SolverOutcome.from_bound(
        cost, bound, termination=mip.outcome.termination,
        solver_status=mip.outcome.solver_status, time_s=time.perf_counter() - t0,
        gap_tolerance=options.mip_rel_gap,
    )


def _result(
    problem: PlacementProblem, options: SolverOptions, server: np.ndarray,
    outcome: SolverOutcome, t0: float, info: dict[str, object], message: str,
) -> PlacementResult:
    """Experts to GPUs within their servers (link loads depend on servers only)."""
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    unit_gpus = [problem.server_gpus(s) for s in range(S)]
    gpus = spread_items(problem, np.repeat(np.arange(L), E), problem.activation.reshape(-1),
                        server.reshape(-1), unit_gpus)
    layout = ExpertLayout.from_primary(gpus.reshape(L, E), problem.num_gpus)
    info["bottleneck"] = max_link_busy(problem, layout)
    return finish("ilp-bottleneck", problem, options, layout, outcome, t0, info, message)
