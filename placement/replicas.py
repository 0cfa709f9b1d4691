"""Replicas chosen jointly with placement: a network flow on hierarchies, else a MIP.

With ``num_redundant`` = R, every MoE layer has E + R expert copies and every origin uses the
copy of its expert that is cheapest for it (the simulator uses the nearest in hops, ties by
lowest replica index; with the hop metric they agree).  Units are servers (or GPUs when a
server's GPUs differ in cost).  Three ways, first the optimal single-copy layout (the start
and the answer of last resort):

* unit costs form a hierarchy (fat trees): the network-flow model of
  ``placement.replica_flow`` on merged unit classes, whose LP vertex is the optimum;
* the same when that model is too large (per-origin demand at the R1 size): the bound by
  decomposition over layers (``placement.replica_bound``) and each layer's flow in the slots
  the decomposition gave it;
* other fabrics: an uncapacitated facility-location MIP, y[l, i, u] = 1 when expert (l, i)
  has a copy on unit u, z[l, i, o, u] = share of the tokens of origin unit o that use it, with
  ``serve`` (sum_u z = 1), ``open`` (z <= y), ``one`` (at least one copy), ``copies`` (at most
  E + R) and the caps ``cap_layer[l, u]``, ``cap_total[u]`` of the plain model.  Only the
  hottest experts of a layer may get more than one copy (the *candidates*) when
  L x E x units^2 > 2e6: the top max(R, 2e6 / (L x units^2)) per layer; the result says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from placement.assignment import cost_matrix, solve_assignment, unit_partition
from placement.lp import Model, run_highs
from placement.outcome import SolverOutcome, Termination, relative_gap
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
)
from placement.replica_bound import decompose
from placement.replica_flow import ReplicaInstance, solve_flow, solve_layers
from placement.replica_tree import classes_of, hierarchy_of, nearest_share, set_cost
from placement.results import failed, finish
from placement.spread import spread_items

MAX_LOCATION_VARS = 2_000_000
FLOW_MAX_COPY_COLUMNS = 100_000  # whole flow model up to this many (expert, class) columns
DECOMPOSITION_SHARE = 0.5  # of the time left: the rest solves each layer's flow


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


def _start(loc: _Location, y0: np.ndarray, cand: np.ndarray, c_u: np.ndarray) -> np.ndarray:
    """A layout of copies ``y0`` [LE, U] as a MIP start (every origin to its cheapest copy)."""
    nc, U = len(cand), y0.shape[1]
    start = np.zeros(loc.model.num_col)
    start[loc.y_col.reshape(-1)] = y0.reshape(-1)
    pick = np.where(y0[cand][:, None, :], c_u[None, :, :], np.inf).argmin(axis=2)  # [nc, ou]
    z = np.zeros((nc, U, U))
    z[np.arange(nc)[:, None], np.arange(U)[None, :], pick] = 1.0
    start[loc.z_col.reshape(-1)] = z.reshape(-1)
    return start


def _layout(
    problem: PlacementProblem, y: np.ndarray, share: np.ndarray, unit_gpus: list[np.ndarray],
) -> ExpertLayout:
    """Copies y [LE, U] (bool), each copy's share of tokens [LE, U]; GPUs within units;
    every expert's busiest copy first."""
    L, E = problem.num_layers, problem.num_experts
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


def _mip_copies(
    loc: _Location, x: np.ndarray, a_u: np.ndarray, cand: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copies y [LE, U] from the MIP's y columns and each copy's share from its z columns."""
    y = np.round(x[loc.y_col]).astype(bool)  # [LE, U]
    z = np.clip(x[loc.z_col], 0.0, 1.0)  # [nc, ou, u]
    share = np.where(y, a_u.sum(axis=1, keepdims=True), 0.0)
    share[cand] = np.einsum("co,cou->cu", a_u[cand], z)
    return y, share


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
    """The best replica layout the time allows, with the best bound any step proved.

    ``options.time_limit_s`` covers the whole call: the single-copy solve, building the
    models and solving them.  When the limit is reached before any has run, the result is the
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
    y0 = np.zeros((L * E, U), dtype=bool)
    y0[np.arange(L * E), member.argmax(axis=1)[single.layout.primary.reshape(-1)]] = True
    units = _Units(unit_gpus, a_u, c_u)
    best = _Incumbent(y0, float(set_cost(a_u, c_u, y0).sum()), "single-copy layout")
    bound = _Bound(_copies_bound(a_u, c_u, L, E, R),
                   f"{R} extra copies per layer where they gain most, caps ignored")
    tree = hierarchy_of(c_u)
    info["hierarchy"] = tree is not None
    if tree is not None and time.perf_counter() < deadline:
        gps = np.array([len(m) for m in unit_gpus], dtype=np.float64)
        inst = ReplicaInstance(a_u, c_u, tree, L, E, R, gps * problem.max_per_gpu_per_layer,
                               gps * problem.slots_per_gpu)
        best, bound = _on_hierarchy(inst, y0, options, deadline, info, best, bound)
    if relative_gap(best.cost, bound.value) <= options.mip_rel_gap:
        return _answer(problem, options, name, info, t0, best, bound, Termination.OPTIMAL,
                       "bound closed", units)
    if tree is not None and n_cand < E:  # the MIP could not hold this layout's copies
        info["replica_mip"] = "not run: model too large, the decomposition's layout and bound"
        term = Termination.TIME_LIMIT if time.perf_counter() >= deadline else (
            Termination.SOLUTION_LIMIT)
        return _answer(problem, options, name, info, t0, best, bound, term,
                       f"flow model {info.get('flow_model')}", units)
    sol = None
    if time.perf_counter() < deadline:
        loc = _location_model(problem, a_u, c_u, cand, unit_gpus)
        info["columns"] = loc.model.num_col
        info["rows"] = loc.model.num_row
        sol = run_highs(loc.model, options, integer=True, start=_start(loc, best.y, cand, c_u),
                        deadline=deadline)
    if sol is None or (sol.x is None and sol.outcome.termination.is_limit):
        info["replica_mip"] = "not run: time limit reached"
        return _answer(problem, options, name, info, t0, best, bound, Termination.TIME_LIMIT,
                       "time limit reached before the replica MIP ran", units)
    if sol.x is None or not sol.status.has_layout:
        return failed(name, problem, options, sol.outcome, t0, info)
    y, share = _mip_copies(loc, sol.x, a_u, cand)
    bound = bound.best(sol.outcome.dual_bound, "HiGHS dual bound")
    if sol.outcome.objective <= best.cost:
        best = _Incumbent(y, sol.outcome.objective, "replica MIP (facility location)", share)
    restricted = "" if n_cand == E else (
        f"; extra copies only for the {n_cand} hottest experts/layer")
    return _answer(problem, options, name, info, t0, best, bound, sol.outcome.termination,
                   f"HiGHS {sol.outcome.solver_status}{restricted}", units)


def _on_hierarchy(
    inst: ReplicaInstance, y0: np.ndarray, options: SolverOptions, deadline: float,
    info: dict[str, object], best: _Incumbent, bound: _Bound,
) -> tuple[_Incumbent, _Bound]:
    """The flow model: whole when small (its optimum), else the decomposition's bound and
    each layer's flow within the slots the decomposition gave it."""
    cl = classes_of(inst.tree, inst.demand, inst.cap_layer, inst.cap_total)
    info["unit_classes"] = len(cl.leaves)
    if len(inst.demand) * len(cl.leaves) <= FLOW_MAX_COPY_COLUMNS:
        out = solve_flow(inst, cl, options, deadline)
        info["flow_model"] = "whole" if out is not None else "whole: stopped by the time limit"
        if out is not None:
            y, optimum = out
            cost = float(set_cost(inst.demand, inst.cost, y).sum())
            return (_Incumbent(y, cost, "network-flow model (simplex vertex, integral)"),
                    bound.best(optimum, "the flow model's optimum (its LP is integral)"))
        return best, bound
    start = time.perf_counter()
    dec = decompose(inst, y0, start + DECOMPOSITION_SHARE * (deadline - start),
                    options.mip_rel_gap, options.threads)
    info.update(decomposition_rounds=dec.rounds, decomposition_converged=dec.closed,
                decomposition_bound=dec.bound, decomposition_master=dec.master_value)
    bound = bound.best(dec.bound, "slot prices over layers (Lagrangian, decomposition)")
    per_layer = solve_layers(inst, cl, dec.use, options, deadline)
    info["flow_model"] = "per layer" if per_layer is not None else (
        "per layer: stopped by the time limit")
    if per_layer is not None:
        cost = float(set_cost(inst.demand, inst.cost, per_layer).sum())
        if cost < best.cost:
            best = _Incumbent(per_layer, cost, "flow model per layer in the decomposition's slots")
    return best, bound


@dataclass(frozen=True)
class _Bound:
    """The best proven lower bound so far and what proved it."""

    value: float
    source: str

    def best(self, value: float, source: str) -> _Bound:
        return _Bound(value, source) if math.isfinite(value) and value > self.value else self


@dataclass(frozen=True, eq=False)
class _Units:
    """The model's units: their GPUs, demand per origin unit [LE, U], round trips [U, U]."""

    gpus: list[np.ndarray]
    demand: np.ndarray
    cost: np.ndarray


@dataclass(frozen=True, eq=False)
class _Incumbent:
    """The best copies so far [LE, U], their cost in the model's units, where they came from
    and (from the MIP) each copy's share of tokens."""

    y: np.ndarray
    cost: float
    source: str
    share: np.ndarray | None = None


def _answer(
    problem: PlacementProblem, options: SolverOptions, name: str, info: dict[str, object],
    t0: float, best: _Incumbent, bound: _Bound, termination: Termination, why: str,
    units: _Units,
) -> PlacementResult:
    """The incumbent as a layout, with the best bound any step proved."""
    L, E = problem.num_layers, problem.num_experts
    share = best.share if best.share is not None else nearest_share(
        units.demand, units.cost, best.y)
    layout = _layout(problem, best.y, share, units.gpus)
    info["replicas_used"] = int((layout.expert_gpus >= 0).sum() - L * E)
    info["incumbent"] = best.source
    info["bound"] = bound.source
    outcome = SolverOutcome.from_bound(best.cost, bound.value, termination, why,
                                       time.perf_counter() - t0, options.mip_rel_gap)
    return finish(name, problem, options, layout, outcome, t0, info,
                  f"{best.source} ({why}); bound: {bound.source} (gap {outcome.gap:.3g})")
