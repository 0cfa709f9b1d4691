"""Replicas chosen jointly with placement: an uncapacitated facility-location MIP.

With ``num_redundant`` = R, every MoE layer has E + R expert copies.  Variables: y[l, i, u] = 1
when expert (l, i) has a copy on unit u (a server, or a GPU when a server's GPUs differ in
cost); z[l, i, o, u] = share of the tokens of origin unit o that use the copy on u.  Minimise
sum a[l, i, o] x cost(o <-> u) x z subject to ``serve[l,i,o]`` (sum_u z = 1), ``open[l,i,o,u]``
(z <= y), ``one[l,i]`` (at least one copy), ``copies[l]`` (at most E + R copies), and the caps
``cap_layer[l,u]``, ``cap_total[u]`` of the plain model.  Given y, the best z sends every
origin to its cheapest copy: the model's "nearest replica" (the simulator uses the nearest in
hops, ties by lowest replica index; with the hop metric they agree).

Only the hottest experts of each layer may get more than one copy (the *candidates*); all
experts are candidates when the model stays small (L x E x units^2 <= 2e6), otherwise the
top max(R, 2e6 / (L x units^2)) per layer by activation; the result says which.  The MIP starts
from the optimal single-copy layout, so a time limit still returns a valid layout with a gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from placement.assignment import cost_matrix, solve_assignment, unit_partition
from placement.lp import Model, run_highs
from placement.outcome import SolverOutcome, Termination
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
)
from placement.results import failed, finish
from placement.spread import spread_items

MAX_LOCATION_VARS = 2_000_000


def _candidates(weights: np.ndarray, L: int, E: int, R: int, U: int) -> tuple[int, np.ndarray]:
    """Experts per layer that may get extra copies (the hottest), and the flat ids of all."""
    n_cand = E if L * E * U * U <= MAX_LOCATION_VARS else min(
        E, max(R, MAX_LOCATION_VARS // (L * U * U))
    )
    w = weights.reshape(L, E)
    cand_rank = np.argsort(np.argsort(-w, axis=1, kind="stable"), axis=1, kind="stable")
    return n_cand, np.flatnonzero((cand_rank < n_cand).reshape(-1))


@dataclass(frozen=True, eq=False)
class _Location:
    """The facility-location model: y[LE, U] copy columns, z[candidate, ou, u] share columns."""

    model: Model
    y_col: np.ndarray
    z_col: np.ndarray


def _location_model(
    problem: PlacementProblem, a_u: np.ndarray, c_u: np.ndarray, cand: np.ndarray,
    unit_gpus: list[np.ndarray],
) -> _Location:
    L, E, R = problem.num_layers, problem.num_experts, problem.num_redundant
    U, nc = len(unit_gpus), len(cand)
    is_cand = np.zeros(L * E, dtype=bool)
    is_cand[cand] = True
    base = a_u @ c_u  # [LE, U]: cost when the copy on u serves every origin
    model = Model()
    y_first = model.add_cols(np.where(is_cand[:, None], 0.0, base).reshape(-1), 0.0, 1.0, True)
    y_col = (y_first + np.arange(L * E * U)).reshape(L * E, U)
    z_cost = a_u[cand][:, :, None] * c_u[None, :, :]  # [nc, ou, u]
    z_first = model.add_cols(z_cost.reshape(-1), 0.0, 1.0, False)
    z_col = (z_first + np.arange(nc * U * U)).reshape(nc, U, U)
    le = np.repeat(np.arange(L * E), U)
    r_one = model.add_rows("one", 1.0, np.where(is_cand, U, 1.0), L * E)
    model.add_entries(r_one + le, y_col.reshape(-1), 1.0)
    r_copies = model.add_rows("copies", 0.0, float(E + R), L)
    model.add_entries(r_copies + le // E, y_col.reshape(-1), 1.0)
    uu = np.tile(np.arange(U), L * E)
    gps = np.array([len(m) for m in unit_gpus], dtype=np.float64)
    r_layer = model.add_rows("cap_layer", 0.0, np.tile(gps * problem.max_per_gpu_per_layer, L),
                             L * U)
    model.add_entries(r_layer + (le // E) * U + uu, y_col.reshape(-1), 1.0)
    r_total = model.add_rows("cap_total", 0.0, gps * problem.slots_per_gpu, U)
    model.add_entries(r_total + uu, y_col.reshape(-1), 1.0)
    r_serve = model.add_rows("serve", 1.0, 1.0, nc * U)
    model.add_entries(r_serve + np.arange(nc * U).repeat(U), z_col.reshape(-1), 1.0)
    r_open = model.add_rows("open", -np.inf, 0.0, nc * U * U)
    rows = r_open + np.arange(nc * U * U)
    model.add_entries(rows, z_col.reshape(-1), 1.0)
    y_of_z = np.broadcast_to(y_col[cand][:, None, :], (nc, U, U))
    model.add_entries(rows, y_of_z.reshape(-1), -1.0)
    return _Location(model, y_col, z_col)


def _start(loc: _Location, y0: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The single-copy layout ``y0`` [LE, U] as a MIP start (every origin to its one copy)."""
    nc, U = len(cand), y0.shape[1]
    start = np.zeros(loc.model.num_col)
    start[loc.y_col.reshape(-1)] = y0.reshape(-1)
    start[loc.z_col.reshape(-1)] = np.broadcast_to(y0[cand][:, None, :], (nc, U, U)).reshape(-1)
    return start


def _layout(
    problem: PlacementProblem, loc: _Location, x: np.ndarray, a_u: np.ndarray,
    cand: np.ndarray, unit_gpus: list[np.ndarray],
) -> ExpertLayout:
    """Copies from y, each copy's share of tokens from z; GPUs within units; busiest first."""
    L, E = problem.num_layers, problem.num_experts
    y = np.round(x[loc.y_col]).astype(bool)  # [LE, U]
    z = np.clip(x[loc.z_col], 0.0, 1.0)  # [nc, ou, u]
    share = np.where(y, a_u.sum(axis=1, keepdims=True), 0.0)
    share[cand] = np.einsum("co,cou->cu", a_u[cand], z)
    le_i, u_i = np.nonzero(y)
    item_weight = share[le_i, u_i]
    gpus = spread_items(problem, le_i // E, item_weight, u_i, unit_gpus)
    copies = np.bincount(le_i, minlength=L * E)
    out = np.full((L * E, int(copies.max())), -1, dtype=np.int64)
    order = np.lexsort((-item_weight, le_i))  # per expert, the busiest copy first
    rank = np.empty(len(order), dtype=np.int64)
    first_of = np.concatenate([[0], np.cumsum(copies)[:-1]])
    rank[order] = np.arange(len(order)) - first_of[le_i[order]]
    out[le_i, rank] = gpus
    return ExpertLayout(out.reshape(L, E, -1), problem.num_gpus)


def _left(options: SolverOptions, deadline: float) -> SolverOptions:
    return replace(options, time_limit_s=max(1e-3, deadline - time.perf_counter()))


def _copies_bound(a_u: np.ndarray, c_u: np.ndarray, L: int, E: int, R: int) -> float:
    """A lower bound on the MIP's objective, in its units, ignoring the GPU caps.

    An expert with one copy costs at least its cheapest single unit, min_u (a_u @ c_u); with
    more copies, at least every origin at its nearest unit.  A layer has at most E + R copies,
    so at most R of its experts have more than one: the bound lets the R that gain most have
    them.  The MIP (and its candidate restriction) can only cost more."""
    single = (a_u @ c_u).min(axis=1)
    nearest = (a_u * c_u.min(axis=1)[None, :]).sum(axis=1)
    gain = np.sort((single - nearest).reshape(L, E), axis=1)[:, E - min(R, E):]
    return float(single.sum() - gain.sum())


def solve_replicas(
    problem: PlacementProblem,
    options: SolverOptions,
    name: str,
    metric: str,
    weights: np.ndarray,
    per_origin: bool,
) -> PlacementResult:
    """The replica MIP, warm-started from the optimal single-copy layout.

    ``options.time_limit_s`` covers the whole call: the single-copy solve, building the MIP
    and solving it.  When the limit is reached before the MIP has run, the result is the
    single-copy layout with the bound of :func:`_copies_bound` (status ``feasible``).
    """
    t0 = time.perf_counter()
    deadline = t0 + options.time_limit_s
    L, E, R = problem.num_layers, problem.num_experts, problem.num_redundant
    rt = problem.round_trip(metric)
    unit_gpus, level = unit_partition(problem, rt)
    U = len(unit_gpus)
    rep = np.array([m[0] for m in unit_gpus])
    member = np.zeros((problem.num_gpus, U))
    for u, m in enumerate(unit_gpus):
        member[m, u] = 1.0
    if per_origin:
        a = problem.origin_split().reshape(L * E, problem.num_gpus)
    else:
        a = weights.reshape(-1)[:, None] * problem.origins[None, :]
    a_u = a @ member  # [LE, origin units]
    c_u = rt[np.ix_(rep, rep)]  # [origin unit, unit]
    n_cand, cand = _candidates(weights, L, E, R, U)
    single = solve_assignment(problem, _left(options, deadline), name,
                              cost_matrix(problem, metric, weights, per_origin), rt=rt,
                              weights=weights)
    info: dict[str, object] = {
        "unit": level, "units": U, "replica_candidates_per_layer": n_cand, "metric": metric,
        "single_copy_objective": single.objective,
    }
    if not single.is_ok or single.layout is None:
        assert single.solver is not None  # the assignment model always reports its solve
        return failed(name, problem, options, single.solver, t0, info)
    y0 = np.zeros((L * E, U))
    y0[np.arange(L * E), member.argmax(axis=1)[single.layout.primary.reshape(-1)]] = 1.0
    sol = None
    if time.perf_counter() < deadline:
        loc = _location_model(problem, a_u, c_u, cand, unit_gpus)
        info["columns"] = loc.model.num_col
        info["rows"] = loc.model.num_row
        sol = run_highs(loc.model, options, integer=True, start=_start(loc, y0, cand),
                        deadline=deadline)
    if sol is None or (sol.x is None and sol.outcome.termination.is_limit):
        # the limit came before the MIP had a layout: the single-copy one is the incumbent
        info["replica_mip"] = "not run: time limit reached"
        info["replicas_used"] = 0
        y0_cost = float((a_u @ c_u)[np.arange(L * E), y0.argmax(axis=1)].sum())
        outcome = SolverOutcome.from_bound(
            y0_cost, _copies_bound(a_u, c_u, L, E, R), Termination.TIME_LIMIT,
            "Time limit reached before the replica MIP ran",
            time_s=time.perf_counter() - t0)
        return finish(name, problem, options, single.layout, outcome, t0, info,
                      "single-copy layout: the time limit was reached before the replica MIP"
                      f" ran; bound: {R} extra copies per layer where they gain most, caps"
                      f" ignored (gap {outcome.gap:.3g})")
    if sol.x is None or not sol.status.has_layout:
        return failed(name, problem, options, sol.outcome, t0, info)
    layout = _layout(problem, loc, sol.x, a_u, cand, unit_gpus)
    info["replicas_used"] = int((layout.expert_gpus >= 0).sum() - L * E)
    msg = (
        f"replica MIP (facility location), HiGHS {sol.outcome.solver_status}"
        + ("" if n_cand == E else f"; extra copies only for the {n_cand} hottest experts/layer")
    )
    return finish(name, problem, options, layout, sol.outcome, t0, info, msg)
