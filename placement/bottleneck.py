"""``ilp-bottleneck``: minimise the busiest network link instead of the total (a MIP).

Traffic model: tokens start on server a with weight W[a] (the origin weights), route to
expert (l, i) with probability p[l, i]; the server b holding it receives P[b] = sum p x.
Dispatch crosses the links of the route a -> b, combine those of b -> a (ECMP as routed:
``server_link_incidence``).  Busy seconds per token on directed link e:
sum_b P[b] x B[b, e], B[b, e] = sum_a W[a] (dispatch_bytes inc[a, b, e] + combine_bytes
inc[b, a, e]) / bandwidth[e].  Minimise t subject to ``link[e]``: sum_b B[b, e] P[b] <= t,
``load[b]``: sum p x - P[b] = 0 and the assignment constraints of the plain model.  Uses the
marginal activation (not per origin).  Starts from the ilp-load layout.
"""

from __future__ import annotations

import time

import numpy as np

from placement.ilp import _expert_groups, failed, finish, ilp_load
from placement.lp import Model, run_highs
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    SolveStatus,
)
from placement.spread import spread_items
from traces.errors import InputError


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
    t0 = time.perf_counter()
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
    g_layer, members = _expert_groups(np.zeros((L * E, 1)), w, L, E)
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
    start_res = ilp_load(problem, options)
    start = None
    if start_res.layout is not None:
        srv = problem.gpu_server[start_res.layout.primary.reshape(-1)]
        xs = np.zeros((n_groups, S))
        for g, m in enumerate(members):
            np.add.at(xs[g], srv[m], 1.0)
        P = np.bincount(srv, weights=w, minlength=S)
        start = np.concatenate([xs.reshape(-1), P, [(P @ B).max() if ne else 0.0]])
        info["ilp_load_bottleneck"] = float(start[-1]) * b_scale
    left = max(1e-3, options.time_limit_s - (time.perf_counter() - t0))
    sol = run_highs(model, options, integer=True, start=start, time_limit_s=left)
    info["highs_status"] = sol.highs_status
    if sol.x is None or sol.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return failed("ilp-bottleneck", problem, options, sol.status, t0, info, sol.gap)
    y = np.round(sol.x[x_col].reshape(n_groups, S)).astype(np.int64)
    expert_server = np.empty(L * E, dtype=np.int64)
    for g, m in enumerate(members):
        expert_server[m] = np.repeat(np.arange(S), y[g])
    gpus = spread_items(problem, np.repeat(np.arange(L), E), w, expert_server, unit_gpus)
    layout = ExpertLayout.from_primary(gpus.reshape(L, E), problem.num_gpus)
    info["bottleneck"] = max_link_busy(problem, layout)
    res = finish("ilp-bottleneck", problem, options, layout, sol, t0, info, False,
                 f"MIP (min busiest link), HiGHS {sol.highs_status}")
    res.info["solver_objective"] = sol.objective * b_scale
    return res
