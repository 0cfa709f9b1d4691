"""Migration-aware ``eplb``: EPLB's replica counts and balance, the fewest weight bytes moved.

EPLB's objective is balance, not traffic: per MoE layer l it chooses copies per expert
``c[e]`` and packs the copies (each carrying ``p[l, e] / c[e]`` routed tokens per token, its
load model) so that the busiest GPU's load is low.  The re-placement keeps the plain EPLB
re-fit's counts ``c`` and takes its busiest load ``cap[l]`` as the goal, and per layer solves

    min  sum_{(e, g) new} x[e, g]                         copies moved (W bytes each)
    s.t. sum_g x[e, g] = c[e]                             every expert keeps EPLB's count
         sum_e x[e, g] = (E + R) / G                      every GPU its slots
         sum_e p[e] / c[e] x[e, g] <= cap[l]              the balance goal, every GPU
         x binary                                         (two copies never share a GPU)

where (e, g) is *new* when GPU g holds no copy of e in the layout in force.  A MIP, solved by
HiGHS from the plain re-fit (relabelled for fewest moves: always feasible) within the time
limit shared over the layers; its dual bounds sum to the result's proven lower bound on the
moves.  A layer whose layout in force already meets the goal (busiest load within ``cap[l]``,
the same load model) is kept as it is: no move meets the goal with fewer.

Price and budget (``--move-weight``/``--move-budget``): the balance goal is a constraint and a
copy moved only costs, so any price leads to the same fewest-moves layout (the price sets no
exchange rate against balance, which has no byte unit).  A budget of ``floor(B / W)`` copies
chooses the layers to re-place (each at its MIP's moves, or kept): the most summed balance gain
(busiest load in force minus ``cap[l]``) within the budget, an exact 0/1 knapsack by dynamic
programming over whole copies; the result never moves more than the budget.
"""

from __future__ import annotations

import math
import time

import numpy as np

from placement.lp import Model, run_highs
from placement.migration import check_move_terms, plan_migration
from placement.outcome import SolverOutcome, Termination
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)

BALANCE_TOLERANCE = 1e-9  # relative slack on the goal (floating-point sums of loads)


def copy_loads(layout: ExpertLayout, activation: np.ndarray, li: int) -> np.ndarray:
    """EPLB's load model for one layer: each copy carries p[e] / copies[e], summed per GPU."""
    eg = layout.expert_gpus[li]
    count = (eg >= 0).sum(axis=1)
    per = np.where(count > 0, activation[li] / np.maximum(count, 1), 0.0)
    e, r = np.nonzero(eg >= 0)
    return np.bincount(eg[e, r], weights=per[e], minlength=layout.num_gpus)


def _solve_layer(problem: PlacementProblem, options: SolverOptions, li: int,
                 current: ExpertLayout, fresh: ExpertLayout, cap: float,
                 limit_s: float) -> tuple[np.ndarray, int, float, bool]:
    """(copy table [E, G] bool, moves, lower bound on the moves, optimal) of layer ``li``,
    solved within ``limit_s`` seconds (none left: the re-fit's table)."""
    E, G = problem.num_experts, problem.num_gpus
    want = (fresh.expert_gpus[li] >= 0).sum(axis=1)
    held = np.zeros((E, G), dtype=bool)
    e, r = np.nonzero(current.expert_gpus[li] >= 0)
    held[e, current.expert_gpus[li][e, r]] = True
    start = np.zeros((E, G), dtype=bool)
    e, r = np.nonzero(fresh.expert_gpus[li] >= 0)
    start[e, fresh.expert_gpus[li][e, r]] = True
    per = problem.activation[li] / want
    model = Model()
    first = model.add_cols((~held).reshape(-1).astype(np.float64), 0.0, 1.0, integer=True)
    col = first + np.arange(E * G)
    e_of, g_of = np.repeat(np.arange(E), G), np.tile(np.arange(G), E)
    r0 = model.add_rows("copies", want.astype(np.float64), want.astype(np.float64), E)
    model.add_entries(r0 + e_of, col, 1.0)
    slots = problem.physical_per_layer // G
    r0 = model.add_rows("slots", float(slots), float(slots), G)
    model.add_entries(r0 + g_of, col, 1.0)
    r0 = model.add_rows("balance", -math.inf, cap * (1 + BALANCE_TOLERANCE), G)
    model.add_entries(r0 + g_of, col, per[e_of])
    fresh_moves = int((start & ~held).sum())
    if limit_s <= 0 or fresh_moves == 0:
        return start, fresh_moves, 0.0, fresh_moves == 0
    sol = run_highs(model, options, integer=True, start=start.reshape(-1).astype(np.float64),
                    time_limit_s=limit_s)
    if sol.x is None or not sol.status.has_layout:
        return start, fresh_moves, 0.0, False
    x = sol.x[col].reshape(E, G) > 0.5
    moves = int((x & ~held).sum())
    if moves > fresh_moves:  # the incumbent is never worse than the start
        return start, fresh_moves, 0.0, False
    bound = sol.outcome.dual_bound if math.isfinite(sol.outcome.dual_bound) else 0.0
    return x, moves, max(0.0, bound), sol.outcome.termination is Termination.OPTIMAL


def choose_layers(gains: np.ndarray, moves: np.ndarray, max_moves: int) -> np.ndarray:
    """Layers to re-place: the most summed gain with sum of moves within ``max_moves`` (0/1
    knapsack, exact: dynamic programming over whole moves); layers without gain stay."""
    L = len(gains)
    pick = np.zeros(L, dtype=bool)
    useful = np.flatnonzero(gains > 0)
    cap = int(min(max_moves, moves[useful].sum())) if useful.size else 0
    best = np.zeros(cap + 1)
    took = np.zeros((L, cap + 1), dtype=bool)
    for li in useful:
        m = int(moves[li])
        if m > cap:
            continue
        cand = np.full(cap + 1, -np.inf)
        cand[m:] = best[:cap + 1 - m] + gains[li]
        took[li] = cand > best
        best = np.maximum(best, cand)
    left = int(np.argmax(best))
    for li in useful[::-1]:
        if took[li, left]:
            pick[li] = True
            left -= int(moves[li])
    return pick


def replace_eplb_with_moves(
    problem: PlacementProblem,
    options: SolverOptions,
    current: ExpertLayout,
    fresh: ExpertLayout,
    weight_bytes: float,
    move_weight: float = 0.0,
    budget_bytes: float | None = None,
    horizon_tokens: float = 1.0,
) -> PlacementResult:
    """The module docstring's re-placement; ``fresh``: the plain EPLB re-fit (the counts, the
    goal and every layer's MIP start)."""
    check_move_terms(horizon_tokens, move_weight, budget_bytes)
    t0 = time.perf_counter()
    L, G = problem.num_layers, problem.num_gpus
    end_s = t0 + options.time_limit_s
    caps = np.array([copy_loads(fresh, problem.activation, li).max() for li in range(L)])
    now = np.array([copy_loads(current, problem.activation, li).max() for li in range(L)])
    tables: list[np.ndarray | None] = [None] * L
    moves, bound = np.zeros(L, dtype=np.int64), np.zeros(L)
    optimal = True
    todo = np.flatnonzero(now > caps * (1 + BALANCE_TOLERANCE))  # the others meet the goal
    for i, li in enumerate(todo.tolist()):
        share = (end_s - time.perf_counter()) / (len(todo) - i)  # a fast layer leaves its time
        tab, m, b, opt = _solve_layer(problem, options, li, current, fresh, caps[li], share)
        tables[li], moves[li], bound[li] = tab, m, b
        optimal &= opt
    max_moves = None if budget_bytes is None else int(budget_bytes // weight_bytes)
    replace_all = max_moves is None or int(moves.sum()) <= max_moves
    if max_moves is None or replace_all:
        pick = np.array([t is not None for t in tables])
    else:
        pick = choose_layers(now - caps, moves, max_moves)
    layout = _assemble(current, tables, pick, G)
    moved = plan_migration(current, layout, problem.distance).num_moves
    lower = float(np.ceil(bound[pick] - 1e-6).sum()) if replace_all else float("nan")
    outcome = SolverOutcome.from_bound(
        objective=float(moved), dual_bound=lower,
        termination=None if optimal else Termination.TIME_LIMIT,
        solver_status=("per-layer MIPs optimal" if optimal else "time limit reached in a"
                       " layer's MIP") + ("" if replace_all else "; layers chosen within the"
                                          " budget (knapsack, exact)"),
        time_s=time.perf_counter() - t0)
    busiest = np.array([copy_loads(layout, problem.activation, li).max() for li in range(L)])
    info: dict[str, object] = {
        "moves": moved, "moved_bytes": moved * weight_bytes, "move_weight": move_weight,
        "move_budget_bytes": budget_bytes, "layers_replaced": int(pick.sum()),
        "layers_kept_meeting_goal": int(sum(t is None for t in tables)),
        "balance_goal_met_layers": int((busiest <= caps * (1 + BALANCE_TOLERANCE)).sum()),
        "moves_lower_bound": lower,
    }
    return PlacementResult(
        strategy="eplb+move", status=outcome.status, layout=layout,
        objective=expected_cost(problem, layout), runtime_s=time.perf_counter() - t0,
        options=options, message="EPLB's counts and balance goal, fewest copies moved",
        info=info, solver=outcome)


def _assemble(current: ExpertLayout, tables: list[np.ndarray | None], pick: np.ndarray,
              G: int) -> ExpertLayout:
    """The layout in force with the picked layers' copy tables."""
    L, E = current.expert_gpus.shape[:2]
    rows = []
    for li in range(L):
        tab = tables[li]
        if pick[li] and tab is not None:
            rows.append([np.flatnonzero(tab[e]) for e in range(E)])
        else:
            eg = current.expert_gpus[li]
            rows.append([eg[e][eg[e] >= 0] for e in range(E)])
    R = max(len(g) for row in rows for g in row)
    out = np.full((L, E, R), -1, dtype=np.int64)
    for li, row in enumerate(rows):
        for e, g in enumerate(row):
            out[li, e, :len(g)] = g
    return ExpertLayout(out, G)
