"""Moving from one layout to another: what moves, and re-placement that pays for moving.

A *move* is a new copy of expert (layer, i) on a GPU that held no copy of it: its weights are
sent from the nearest old copy (distance, ties to the lowest GPU).  Copies that stay cost
nothing, copies that disappear are dropped in place.  Weight bytes per copy come from the model
(:func:`expert_weight_bytes`).

Migration-aware re-placement minimises, over the next ``horizon_tokens`` tokens, the expected
traffic plus a price on moving:

    horizon_tokens x sum p[l,i,o] rt[o,h] x[l,i,h]  +  move_weight x W x dist(cur[l,i], h) x[l,i,h]

in byte-hops (``rt`` in hops: a token's dispatch + combine bytes cross ``rt`` links; a weight
move of W bytes crosses ``dist`` links).  For the single-copy ILPs (``ilp``, ``ilp-load``,
``ilp-origin``) this is the same assignment model with a different cost, still totally
unimodular: the LP optimum is an exact optimum.  A budget on bytes moved adds one knapsack
row and the balance of the strategy's own full re-placement as a priced goal (hops alone
cannot tell a server's GPUs apart, and a budget alone buys hop savings and leaves the busiest
GPU as it was): one MIP (:mod:`placement.migration_budget`) whose dual bound is the result's
proven bound, so the result carries its gap.  A price without a budget has the same balance
goal: the exact priced assignment is kept when its busiest GPU meets it (then it is optimal
with the balance term too), else the MIP without the budget row starts from it.

``dedup`` and ``dedup-bytes`` have their own move-limited search
(:mod:`placement.migration_dedup`).
Any strategy's full re-fit can be relabelled (:func:`relabel_for_fewest_moves`): GPUs that are
interchangeable for every objective (same distance row and column, same origin share) are
matched to the old GPUs so that as many copies as possible stay (an assignment, exact).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from placement.assignment import cost_matrix, gpu_loads, solve_assignment
from placement.lp import Model, run_highs
from placement.migration_budget import balance_price, solve_with_balance_goal
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)
from placement.strategies import solve_placement
from traces.infra.errors import InputError
from traces.model import ModelSpec

ASSIGNMENT_STRATEGIES = {"ilp": False, "ilp-load": False, "ilp-origin": True}
# A move between GPUs of one server crosses no network link (hop weight 0) but still moves the
# weights over NVLink: it is priced as this fraction of a network hop, so that ties between
# GPUs of a server never move weights for nothing.
INTRA_SERVER_MOVE_HOPS = 1e-3
# A priced re-placement whose busiest GPU is within this fraction of the balance goal is kept
# as the exact assignment; above it the balance MIP starts from it.
BALANCE_TOLERANCE = 1e-9


def expert_weight_bytes(model: ModelSpec, bytes_per_param: float) -> float:
    """Bytes of one routed expert's weights: 3 matrices hidden x moe_intermediate (gate, up,
    down), e.g. DeepSeek-R1: 3 x 7168 x 2048 = 44.04M parameters, 44 MB at FP8."""
    if model.moe_intermediate_size <= 0:
        raise InputError(
            f"model {model.name!r}: moe_intermediate_size is unknown (0); the weight bytes of an"
            " expert cannot be computed; give the model's geometry with it"
        )
    if not bytes_per_param > 0:
        raise InputError(f"--weight-bytes-per-param {bytes_per_param}: must be > 0")
    return 3.0 * model.hidden_size * model.moe_intermediate_size * bytes_per_param


@dataclass(frozen=True, eq=False)
class MigrationPlan:
    """One row per move: MoE layer position, expert, source GPU, destination GPU."""

    layer: np.ndarray
    expert: np.ndarray
    src_gpu: np.ndarray
    dst_gpu: np.ndarray

    @property
    def num_moves(self) -> int:
        return int(self.layer.size)

    def pair_counts(self, num_gpus: int) -> np.ndarray:
        """Moves per (source, destination) GPU pair, [gpus, gpus]."""
        out = np.zeros((num_gpus, num_gpus), dtype=np.int64)
        np.add.at(out, (self.src_gpu, self.dst_gpu), 1)
        return out


def plan_migration(old: ExpertLayout, new: ExpertLayout, distance: np.ndarray) -> MigrationPlan:
    """The moves that turn ``old`` into ``new`` (see the module docstring)."""
    if old.expert_gpus.shape[:2] != new.expert_gpus.shape[:2] or old.num_gpus != new.num_gpus:
        raise InputError("migration: the two layouts are for different models or clusters")
    L, E = old.expert_gpus.shape[:2]
    rows: list[tuple[int, int, int, int]] = []
    for li in range(L):
        for e in range(E):
            before = old.expert_gpus[li, e]
            before = before[before >= 0]
            for g in new.expert_gpus[li, e]:
                if g < 0 or g in before:
                    continue
                d = distance[before, g]
                src = int(before[np.lexsort((before, d))[0]])
                rows.append((li, e, src, int(g)))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return MigrationPlan(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


def move_cost_matrix(problem: PlacementProblem, current: ExpertLayout) -> np.ndarray:
    """Hops from the nearest current copy of (l, i) to GPU h, [layers * experts, gpus]: 0 where
    h holds a copy, at least ``INTRA_SERVER_MOVE_HOPS`` for any other GPU."""
    eg = current.expert_gpus
    d = problem.distance[np.maximum(eg, 0)]  # [L, E, R, G]
    d = np.where(eg[..., None] >= 0, d, np.inf).min(axis=2).reshape(-1, problem.num_gpus)
    holds = _holds(problem, current)
    return np.where(holds, 0.0, np.maximum(d, INTRA_SERVER_MOVE_HOPS))


def replace_with_move_cost(
    problem: PlacementProblem,
    options: SolverOptions,
    strategy: str,
    current: ExpertLayout,
    horizon_tokens: float,
    weight_bytes: float,
    move_weight: float = 1.0,
    budget_bytes: float | None = None,
) -> PlacementResult:
    """Migration-aware re-placement for the assignment strategies: priced (exact), or within
    a budget with the full re-placement's balance as a goal (to HiGHS's MIP gap); see the
    module docstring.

    A route's byte-hops are the problem's (dispatch + combine bytes) / 2 x its round-trip hops
    (distances are symmetric hop counts).
    """
    if strategy not in ASSIGNMENT_STRATEGIES:
        raise InputError(
            "migration-aware re-placement as one exact model is for"
            f" {sorted(ASSIGNMENT_STRATEGIES)}; {strategy!r} is re-placed by relabelling"
        )
    if problem.num_redundant or problem.balance_eps is not None:
        raise InputError(
            "migration-aware re-placement: replicas and the balance constraint are not supported"
            " with --move-weight/--move-budget; use --policy periodic"
        )
    check_move_terms(horizon_tokens, move_weight, budget_bytes)
    t0 = time.perf_counter()
    weights = problem.activation
    if strategy == "ilp":
        k = problem.activation.sum(axis=1, keepdims=True)
        weights = np.broadcast_to(k / problem.num_experts, problem.activation.shape).copy()
    traffic = cost_matrix(problem, "hops", weights, ASSIGNMENT_STRATEGIES[strategy])
    traffic = traffic * horizon_tokens * (problem.dispatch_bytes + problem.combine_bytes) / 2.0
    dist = move_cost_matrix(problem, current)
    moves = move_weight * weight_bytes * dist  # network byte-hops of the weights moved
    name = f"{strategy}+move"
    # The balance goal: the busiest GPU of the strategy's own full re-placement (its layout
    # spreads a server's experts over the server's GPUs; hops alone cannot tell them apart).
    full = solve_placement(problem, strategy, options)
    if not full.is_ok or full.layout is None:
        return full
    cap = float(gpu_loads(problem, full.layout).max())
    start = None
    if budget_bytes is None:  # priced: the assignment model (TU, exact) first
        priced = solve_assignment(problem, options, name, traffic + moves, force_gpus=True)
        if (not priced.is_ok or priced.layout is None
                or gpu_loads(problem, priced.layout).max() <= cap * (1 + BALANCE_TOLERANCE)):
            return _annotate(priced, problem, current, weight_bytes, move_weight, None)
        start = priced.layout  # misses the balance goal: the MIP starts from it
    price = balance_price(problem, horizon_tokens * (problem.dispatch_bytes
                                                     + problem.combine_bytes) / 2.0)
    left = max(1e-3, options.time_limit_s - (time.perf_counter() - t0))
    kind, moves_left = ("balance", None) if budget_bytes is None else (
        "budget", int(budget_bytes // weight_bytes))
    res = solve_with_balance_goal(
        problem, replace(options, time_limit_s=left), f"{name}+{kind}", traffic + moves,
        _holds(problem, current), moves_left, current, cap, price, start)
    return _annotate(res, problem, current, weight_bytes, move_weight, budget_bytes)


def check_move_terms(horizon_tokens: float, move_weight: float, budget_bytes: float | None
                     ) -> None:
    """Refuse a horizon that is not positive, a negative price or a negative budget."""
    if not horizon_tokens > 0 or not move_weight >= 0:
        raise InputError("migration: horizon_tokens must be > 0 and move_weight >= 0")
    if budget_bytes is not None and not budget_bytes >= 0:
        raise InputError(f"--move-budget {budget_bytes}: must be >= 0 bytes")


def _holds(problem: PlacementProblem, layout: ExpertLayout) -> np.ndarray:
    """[layers * experts, gpus]: GPU h holds a copy of (l, i) in ``layout``."""
    return _held(layout, layout.expert_gpus.shape[0], problem.num_gpus).T


def _moved_bytes(problem: PlacementProblem, current: ExpertLayout, layout: ExpertLayout,
                 weight_bytes: float) -> float:
    return plan_migration(current, layout, problem.distance).num_moves * weight_bytes


def _annotate(
    res: PlacementResult,
    problem: PlacementProblem,
    current: ExpertLayout,
    weight_bytes: float,
    price: float,
    budget: float | None,
) -> PlacementResult:
    if not res.is_ok or res.layout is None:
        return res
    moved = _moved_bytes(problem, current, res.layout, weight_bytes)
    info = dict(res.info)
    info.update(
        moved_bytes=moved,
        moves=int(round(moved / weight_bytes)) if weight_bytes else 0,
        move_weight=price,
        move_budget_bytes=budget,
    )
    return replace(res, info=info, objective=expected_cost(problem, res.layout))


def interchangeable_gpus(problem: PlacementProblem) -> list[np.ndarray]:
    """Classes of GPUs that every objective treats alike: equal distance row and column and
    equal origin share (so relabelling within a class changes no cost, balance or traffic)."""
    d, w = problem.distance, problem.origins
    key = np.column_stack([np.round(d, 9), np.round(d.T, 9), np.round(w, 12)])
    _, inv = np.unique(key, axis=0, return_inverse=True)
    return [np.flatnonzero(inv == c) for c in range(inv.max() + 1)]


def relabel_for_fewest_moves(
    problem: PlacementProblem, current: ExpertLayout, new: ExpertLayout, options: SolverOptions
) -> ExpertLayout:
    """``new`` with its GPUs permuted within interchangeable classes so that the most copies
    stay where they are (an assignment per class, solved exactly)."""
    perm = np.arange(problem.num_gpus)
    L = new.expert_gpus.shape[0]
    held_new = _held(new, L, problem.num_gpus)  # [gpus, L*E] bool
    held_old = _held(current, L, problem.num_gpus)
    for cls in interchangeable_gpus(problem):
        if len(cls) < 2:
            continue
        overlap = held_new[cls].astype(np.float64) @ held_old[cls].T.astype(np.float64)
        perm[cls] = cls[max_assignment(overlap, options)]
    eg = np.where(new.expert_gpus >= 0, perm[np.maximum(new.expert_gpus, 0)], -1)
    return ExpertLayout(eg, new.num_gpus)


def _held(layout: ExpertLayout, L: int, G: int) -> np.ndarray:
    eg = layout.expert_gpus
    out = np.zeros((G, eg.shape[0] * eg.shape[1]), dtype=bool)
    li, e, r = np.nonzero(eg >= 0)
    out[eg[li, e, r], li * eg.shape[1] + e] = True
    return out


def max_assignment(weight: np.ndarray, options: SolverOptions) -> np.ndarray:
    """target[i] for every row i maximising sum weight[i, target[i]] (a permutation)."""
    n = weight.shape[0]
    model = Model()
    cols = model.add_cols(-weight.reshape(-1), 0.0, 1.0, integer=False)
    col = cols + np.arange(n * n)
    rows = model.add_rows("row", 1.0, 1.0, n)
    model.add_entries(rows + np.repeat(np.arange(n), n), col, 1.0)
    cols_r = model.add_rows("col", 1.0, 1.0, n)
    model.add_entries(cols_r + np.tile(np.arange(n), n), col, 1.0)
    sol = run_highs(model, options, integer=False)
    if sol.x is None:
        return np.arange(n)
    x = sol.x[col].reshape(n, n)
    return np.argmax(x, axis=1)
