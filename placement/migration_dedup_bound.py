"""An upper bound on the de-duplicated traffic gain any layout within a move budget can reach.

The budgeted ``dedup`` re-placement (:mod:`placement.migration_dedup`) is a local search: its
result carries no bound.  This module bounds, on the same window sample, the best gain any
layout moving at most ``K`` expert copies (over all layers) can reach against the layout in
force, so that a share of the full re-fit's gain the search does not reach can be told apart
from one no layout reaches.

Relaxation (each step can only lower the best cost, so the result stays a bound):

* servers, not GPUs: a token's de-duplicated cost depends only on which server holds each of
  its experts (:mod:`placement.dedup.evaluate`); an expert counts as moved when its server
  changes (a move within a server is dropped: it only adds moves);
* no balance goal; a server holds at most its GPUs x ``max_per_gpu_per_layer`` experts of a
  layer.

Per layer ``l`` and number of moves ``k``, the exact model over the window's tokens (tokens
with the same origin server and experts are merged, their costs summed):

    f_l(k) = min  sum_{t, s != own(t)} c[t, s] u[t, s]
             s.t. sum_s y[e, s] = 1,  sum_e y[e, s] <= cap_s,
                  u[t, s] >= y[e, s]          every expert e of token t
                  sum_e (1 - y[e, cur(e)]) <= k,   y binary, u in [0, 1]

(``u`` is integral at an optimum once ``y`` is.)  HiGHS solves it within a time limit; its dual
bound ``b_l(k) <= f_l(k)`` is what is used, so an unfinished solve loosens the bound but
never breaks it.  ``f_l`` is non-increasing in ``k``: moves between two grid points ``g_i <
k <= g_{i+1}`` cost at least ``g_i + 1`` and reach at most ``b_l(g_{i+1})``.  The layers share
only the budget, so the bound over all layers is a knapsack over each layer's grid points,
solved exactly by dynamic programming over the moves spent (:func:`budget_bound`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from placement.dedup.evaluate import server_cost
from placement.lp import Model, run_highs
from placement.problem import ExpertLayout, PlacementProblem, SolverOptions


@dataclass(frozen=True)
class LayerTokens:
    """One layer's merged tokens: experts [n, k], origin server [n], remote-copy cost [n, S]."""

    experts: np.ndarray
    own: np.ndarray
    cost: np.ndarray


@dataclass(frozen=True)
class LayerCurve:
    """Dual bounds ``bound[i] <= f_l(grid[i])`` of one layer (costs per sample, not per token)
    and the incumbents' values ``best[i] >= f_l(grid[i])``."""

    grid: tuple[int, ...]
    bound: tuple[float, ...]
    best: tuple[float, ...]


@dataclass(frozen=True)
class BudgetBound:
    """Lowest cost per token (all layers) any layout within ``max_moves`` can reach, bounded."""

    max_moves: int
    cost_bound_per_token: float
    layers: tuple[LayerCurve, ...]
    time_s: float


def layer_tokens(problem: PlacementProblem, layer: int, metric: str = "hops") -> LayerTokens:
    """The window sample's tokens at one layer, identical (origin server, experts) merged."""
    sample = problem.token_sample
    assert sample is not None
    o = sample.origin_gpu.astype(np.int64)
    own = problem.gpu_server[o]
    ex = np.sort(sample.experts[:, layer, :].astype(np.int64), axis=1)
    keys = np.concatenate([own[:, None], ex], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    cost = np.zeros((len(uniq), problem.num_servers))
    np.add.at(cost, inv.ravel(), server_cost(problem, metric)[o])
    return LayerTokens(uniq[:, 1:], uniq[:, 0], cost)


def layer_cost(tokens: LayerTokens, servers: np.ndarray) -> float:
    """Exact de-duplicated cost (summed over the sample) with expert e on ``servers[e]``."""
    used = np.zeros(tokens.cost.shape, dtype=bool)
    n, k = tokens.experts.shape
    used[np.repeat(np.arange(n), k), servers[tokens.experts].ravel()] = True
    used[np.arange(n), tokens.own] = False
    return float((used * tokens.cost).sum())


def solve_layer(tokens: LayerTokens, current: np.ndarray, caps: np.ndarray, max_moves: int,
                options: SolverOptions, start: np.ndarray | None = None,
                time_limit_s: float | None = None) -> tuple[float, float, np.ndarray]:
    """The module docstring's model for one layer: (dual bound, incumbent value, incumbent's
    servers per expert); ``current``: every expert's server in the layout in force."""
    E, S = len(current), tokens.cost.shape[1]
    n, k = tokens.experts.shape
    model = Model()
    y = model.add_cols(np.zeros(E * S), 0.0, 1.0, integer=True)
    t_idx, s_idx = np.nonzero(tokens.cost > 0)
    u = model.add_cols(tokens.cost[t_idx, s_idx], 0.0, 1.0)
    r = model.add_rows("assign", 1.0, 1.0, E)
    model.add_entries(r + np.repeat(np.arange(E), S), y + np.arange(E * S), 1.0)
    r = model.add_rows("cap", 0.0, caps.astype(float), S)
    model.add_entries(r + np.tile(np.arange(S), E), y + np.arange(E * S), 1.0)
    m = len(t_idx)
    r = model.add_rows("cover", 0.0, np.inf, m * k)
    rows = r + np.arange(m * k)
    ue = np.repeat(u + np.arange(m), k)
    ye = y + tokens.experts[t_idx].ravel() * S + np.repeat(s_idx, k)
    model.add_entries(rows, ue, 1.0)
    model.add_entries(rows, ye, -1.0)
    r = model.add_rows("budget", E - max_moves, np.inf, 1)  # experts that stay >= E - k
    model.add_entries(np.full(E, r), y + np.arange(E) * S + current, 1.0)
    first = current if start is None else start
    x0 = np.zeros(model.num_col)
    x0[y + np.arange(E) * S + first] = 1.0
    onehot = np.zeros((E, S), dtype=bool)
    onehot[np.arange(E), first] = True
    x0[u:] = onehot[tokens.experts[t_idx]].any(axis=1)[np.arange(m), s_idx]
    sol = run_highs(model, options, integer=True, start=x0, time_limit_s=time_limit_s)
    bound = float(sol.outcome.dual_bound)
    bound = max(0.0, bound) if np.isfinite(bound) else 0.0  # costs are >= 0: 0 always holds
    if sol.x is None:
        return bound, layer_cost(tokens, first), first
    servers = np.argmax(sol.x[y:y + E * S].reshape(E, S), axis=1)
    return bound, layer_cost(tokens, servers), servers


def layer_curve(problem: PlacementProblem, layer: int, current: ExpertLayout,
                grid: Sequence[int], options: SolverOptions,
                time_limit_s: float | None = None, metric: str = "hops") -> LayerCurve:
    """Dual bounds and incumbents of one layer at every number of moves of ``grid``
    (increasing), each solve started from the previous one's incumbent."""
    tokens = layer_tokens(problem, layer, metric)
    cur = problem.gpu_server[current.primary[layer].astype(np.int64)]
    caps = np.bincount(problem.gpu_server, minlength=problem.num_servers) * (
        problem.max_per_gpu_per_layer)
    bounds, best = [], []
    start = cur
    for k in grid:
        if k == 0:
            bounds.append(layer_cost(tokens, cur))
            best.append(bounds[-1])
            continue
        b, v, start = solve_layer(tokens, cur, caps, k, options, start, time_limit_s)
        bounds.append(b)
        best.append(v)
    # f_l is non-increasing in k: a bound at k holds at every smaller k as well
    tight = np.maximum.accumulate(np.asarray(bounds)[::-1])[::-1]
    return LayerCurve(tuple(int(k) for k in grid), tuple(float(b) for b in tight),
                      tuple(float(v) for v in best))


def knapsack_bound(curves: Sequence[LayerCurve], max_moves: int) -> float:
    """The lowest summed cost the layers' bounds allow within ``max_moves`` in all: layer l at
    grid point ``i`` spends at least ``grid[i-1] + 1`` moves (none at ``grid[0] = 0``) and
    costs at least ``bound[i]`` (exact dynamic programming over the moves spent)."""
    inf = float("inf")
    best = np.zeros(max_moves + 1)
    for c in curves:
        assert c.grid[0] == 0, "every layer's grid starts at 0 moves"
        nxt = np.full(max_moves + 1, inf)
        for i, b in enumerate(c.bound):
            spend = 0 if i == 0 else c.grid[i - 1] + 1
            if spend > max_moves:
                break
            nxt[spend:] = np.minimum(nxt[spend:], best[:max_moves + 1 - spend] + b)
        best = nxt
    return float(best.min())


def budget_bound(problem: PlacementProblem, current: ExpertLayout, max_moves: int,
                 grid: Sequence[int], options: SolverOptions,
                 time_limit_s: float | None = None, metric: str = "hops",
                 layers: Sequence[int] | None = None) -> BudgetBound:
    """The bound of the module docstring over ``layers`` (default: all), per token."""
    assert problem.token_sample is not None
    t0 = time.perf_counter()
    chosen = range(problem.num_layers) if layers is None else layers
    top = min(max_moves, problem.num_experts)  # a layer cannot move more than its experts
    g = sorted({0, *(k for k in grid if k <= top), top})
    curves = tuple(layer_curve(problem, li, current, g, options, time_limit_s, metric)
                   for li in chosen)
    total = knapsack_bound(curves, max_moves)
    return BudgetBound(max_moves, total / problem.token_sample.num_tokens, curves,
                       time.perf_counter() - t0)
