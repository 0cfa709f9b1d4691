"""The ceiling of a cell: the least expected hops per token that ANY layout can reach.

A placement is judged on the tokens it is replayed with.  Given their activation per origin
GPU ``a[l, i, o]`` (``PlacementProblem.origin_activation`` of the *judged* tokens), the hops of
a single-copy layout are ``sum a[l, i, o] x (d(o, h) + d(h, o))`` with h the expert's GPU, and
the best layout under the capacities of the problem is an assignment problem (totally
unimodular: its LP optimum is integral, so the minimum is exact).  With redundant copies
(``num_redundant`` > 0) each origin uses its nearest copy; the least cost is then bounded
from below by the LP relaxation of the facility-location model of ``placement.replicas``
(every expert allowed extra copies, one layer at a time), a valid bound a layout may not
reach.

The ceiling of a saving against a baseline with hops ``b`` is ``1 - minimum / b``: no layout
of that cell can save more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from placement.assignment import solve_assignment, unit_partition
from placement.lp import Model, run_highs
from placement.outcome import SolveStatus
from placement.problem import PlacementProblem, SolverOptions
from traces.infra.errors import InputError

MAX_LAYER_COLUMNS = 20_000  # replica bound only for per-layer LPs up to this size


@dataclass(frozen=True, slots=True)
class Ceiling:
    """Least expected hops per token over all layouts (``kind``: exact, lp-bound or none)."""

    hops_per_token: float
    kind: str
    time_s: float
    note: str = ""


def hop_ceiling(problem: PlacementProblem, options: SolverOptions | None = None) -> Ceiling:
    """The ceiling of ``problem`` (its ``origin_activation`` = the judged tokens)."""
    t0 = time.perf_counter()
    if problem.origin_activation is None:
        raise InputError("ceiling: needs the judged tokens' activation per origin GPU")
    opts = options or SolverOptions(time_limit_s=600.0)
    if problem.num_redundant > 0:
        return _replica_bound(problem, opts, t0)
    free = replace(problem, balance_eps=None)
    rt = free.round_trip("hops")
    cost_g = free.origin_split().reshape(-1, free.num_gpus) @ rt
    res = solve_assignment(free, opts, "ceiling", cost_g, rt=rt)
    if not res.is_ok or res.status is not SolveStatus.OPTIMAL:
        return Ceiling(float("nan"), "none", time.perf_counter() - t0,
                       f"assignment not solved: {res.message}")
    return Ceiling(res.objective, "exact", time.perf_counter() - t0)


def _replica_bound(problem: PlacementProblem, options: SolverOptions, t0: float) -> Ceiling:
    """Sum over layers of the LP relaxation of one layer's facility-location model.

    Dropping the slot limit across layers (``cap_total``) and integrality only relaxes the
    model, so the sum is a valid lower bound on every replica layout's expected hops.
    """
    L, E, R = problem.num_layers, problem.num_experts, problem.num_redundant
    rt = problem.round_trip("hops")
    unit_gpus, _ = unit_partition(problem, rt)
    U = len(unit_gpus)
    if E * U * (U + 1) > MAX_LAYER_COLUMNS:
        return Ceiling(float("nan"), "none", time.perf_counter() - t0,
                       f"replica bound too large ({E} experts x {U}^2 units per layer)")
    rep = np.array([gpus[0] for gpus in unit_gpus])
    member = np.zeros((problem.num_gpus, U))
    for u, gpus in enumerate(unit_gpus):
        member[gpus, u] = 1.0
    a_u = problem.origin_split() @ member  # [L, E, origin unit]
    c_u = rt[np.ix_(rep, rep)]
    gps = np.array([len(gpus) for gpus in unit_gpus], dtype=np.float64)
    total = 0.0
    for li in range(L):
        m = Model()
        y = (m.add_cols(np.zeros(E * U), 0.0, 1.0) + np.arange(E * U)).reshape(E, U)
        z_cost = a_u[li][:, :, None] * c_u[None, :, :]
        z = (m.add_cols(z_cost.reshape(-1), 0.0, 1.0) + np.arange(E * U * U)).reshape(E, U, U)
        ee = np.repeat(np.arange(E), U)
        uu = np.tile(np.arange(U), E)
        m.add_entries(m.add_rows("one", 1.0, float(U), E) + ee, y.reshape(-1), 1.0)
        m.add_entries(m.add_rows("copies", 0.0, float(E + R), 1) + 0 * ee, y.reshape(-1), 1.0)
        r = m.add_rows("cap_layer", 0.0, gps * problem.max_per_gpu_per_layer, U)
        m.add_entries(r + uu, y.reshape(-1), 1.0)
        r = m.add_rows("serve", 1.0, 1.0, E * U)
        m.add_entries(r + np.arange(E * U).repeat(U), z.reshape(-1), 1.0)
        rows = m.add_rows("open", -np.inf, 0.0, E * U * U) + np.arange(E * U * U)
        m.add_entries(rows, z.reshape(-1), 1.0)
        m.add_entries(rows, np.broadcast_to(y[:, None, :], (E, U, U)).reshape(-1), -1.0)
        sol = run_highs(m, options, integer=False)  # simplex: the exact LP optimum
        if sol.status is not SolveStatus.OPTIMAL:
            return Ceiling(float("nan"), "none", time.perf_counter() - t0,
                           f"replica bound LP of layer {li}: {sol.outcome.solver_status}")
        total += float(sol.outcome.objective)
    return Ceiling(total, "lp-bound", time.perf_counter() - t0)
