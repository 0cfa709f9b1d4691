"""Budgeted re-placement with a balance goal: one MIP over (expert, GPU) pairs.

Within a budget of ``B`` weight bytes moved per rebalance (``W`` bytes per expert copy, so at
most ``floor(B / W)`` new copies), the re-placement solves

    min  sum_{e,h} (traffic[e, h] + move[e, h]) x[e, h]  +  price x z
    s.t. sum_h x[e, h] = 1                               every expert e on one GPU
         sum_{e in layer l} x[e, h] <= max per layer     every (l, h)
         sum_e x[e, h] <= slots                          every GPU h
         sum_{(e, h) new} x[e, h] <= floor(B / W)        the budget (new: h holds no copy of e)
         sum_e p[e] x[e, h] - z <= cap                   every GPU h (balance)
         x binary, z >= 0

``traffic`` and ``move`` are the byte-hops of :func:`placement.migration.replace_with_move_cost`,
``p[e]`` the expert's expected routed tokens per token and ``cap`` the busiest GPU's load under
the strategy's own full re-placement (moves free): ``z`` is how far the busiest GPU stays above
the balance a full re-placement reaches.  Without the balance rows the model cannot tell the
GPUs of a server apart (equal hops) and a budget buys the moves that save the most hops first,
leaving the busiest GPU as it was.  ``price`` (:func:`balance_price`) puts one routed token per
token of excess at ``BALANCE_PRICE_ROUND_TRIPS`` longest round trips over the horizon: twice the
most traffic that load can cost on any GPU, so relieving the busiest GPU comes before saving
hops.

The balance rows break total unimodularity: HiGHS solves the MIP from the layout in force (zero
moves, always feasible) and its dual bound is the proven lower bound of the result (``solver``:
objective, bound and gap in the model's byte-hop units).
"""

from __future__ import annotations

import math
import time

import numpy as np

from placement.assignment import gpu_loads
from placement.lp import Model, run_highs
from placement.problem import ExpertLayout, PlacementProblem, PlacementResult, SolverOptions
from placement.results import failed, finish

# Excess load on the busiest GPU (routed tokens per token above the full re-placement's) is
# priced as this many of the longest round trips per excess token over the horizon.
BALANCE_PRICE_ROUND_TRIPS = 2.0


def balance_price(problem: PlacementProblem, byte_hops_per_hop: float) -> float:
    """Byte-hops per routed token per token of excess over the balance cap:
    ``BALANCE_PRICE_ROUND_TRIPS`` x the longest round trip x ``byte_hops_per_hop`` (the horizon's
    route bytes per hop of round trip, the traffic matrix's scale)."""
    rt_max = float(problem.round_trip("hops").max())
    return BALANCE_PRICE_ROUND_TRIPS * max(rt_max, 1.0) * byte_hops_per_hop


def solve_with_balance_goal(
    problem: PlacementProblem,
    options: SolverOptions,
    name: str,
    cost: np.ndarray,
    holds: np.ndarray,
    max_moves: int | None,
    current: ExpertLayout,
    cap: float,
    price: float,
    start_layout: ExpertLayout | None = None,
) -> PlacementResult:
    """The MIP of the module docstring.  ``cost``: traffic + move byte-hops [L * E, gpus];
    ``holds``: GPU h holds a copy of e in ``current`` [L * E, gpus]; ``max_moves``: new copies
    the budget pays for (None: no budget row, the price alone limits moves); ``cap``/``price``:
    the balance goal and the price of missing it; ``start_layout``: HiGHS's first incumbent
    (default: the layout in force)."""
    t0 = time.perf_counter()
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    n = L * E * G
    e_of, h_of = np.repeat(np.arange(L * E), G), np.tile(np.arange(G), L * E)
    model = Model()
    col = model.add_cols(cost.reshape(-1), 0.0, 1.0, integer=True) + np.arange(n)
    z = model.add_cols(np.array([price]), 0.0, math.inf)
    r = model.add_rows("assign", 1.0, 1.0, L * E)
    model.add_entries(r + e_of, col, 1.0)
    r = model.add_rows("cap_layer", 0.0, problem.max_per_gpu_per_layer, L * G)
    model.add_entries(r + (e_of // E) * G + h_of, col, 1.0)
    r = model.add_rows("cap_total", 0.0, problem.slots_per_gpu, G)
    model.add_entries(r + h_of, col, 1.0)
    if max_moves is not None:
        new = ~holds.reshape(-1)
        r = model.add_rows("budget", 0.0, float(max_moves), 1)
        model.add_entries(np.full(int(new.sum()), r), col[new], 1.0)
    r = model.add_rows("balance", -math.inf, cap, G)
    model.add_entries(r + h_of, col, problem.activation.reshape(-1)[e_of])
    model.add_entries(r + np.arange(G), np.full(G, z), -1.0)
    first = current if start_layout is None else start_layout
    start = np.zeros(n + 1)
    start[:n] = (np.arange(G)[None, :] == first.primary.reshape(-1)[:, None]).reshape(-1)
    start[n] = max(0.0, float(gpu_loads(problem, first).max()) - cap)
    sol = run_highs(model, options, integer=True, start=start)
    info: dict[str, object] = {"columns": model.num_col, "rows": model.num_row, "mip": True,
                               "balance_cap": cap, "balance_price": price}
    if sol.x is None or not sol.status.has_layout:
        return failed(name, problem, options, sol.outcome, t0, info)
    gpus = np.argmax(sol.x[col].reshape(L * E, G), axis=1)
    layout = ExpertLayout.from_primary(gpus.reshape(L, E), G)
    info["balance_excess"] = max(0.0, float(gpu_loads(problem, layout).max()) - cap)
    return finish(name, problem, options, layout, sol.outcome, t0, info)
