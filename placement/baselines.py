"""Baseline strategies (no solver)."""

from __future__ import annotations

import time

import numpy as np

from placement.check import check_layout
from placement.outcome import SolveStatus
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)


def _result(
    name: str, problem: PlacementProblem, gpus: np.ndarray, options: SolverOptions, t0: float
) -> PlacementResult:
    layout = ExpertLayout.from_primary(gpus, problem.num_gpus)
    return heuristic_result(name, problem, layout, options, t0)


def heuristic_result(
    name: str,
    problem: PlacementProblem,
    layout: ExpertLayout,
    options: SolverOptions,
    t0: float,
    message: str = "constructive baseline (no optimisation)",
) -> PlacementResult:
    """A constructive layout, checked: a layout that breaks a rule is never handed back."""
    violations = check_layout(problem, layout)
    if violations:
        return PlacementResult(
            strategy=name, status=SolveStatus.INFEASIBLE, layout=None, objective=float("nan"),
            runtime_s=time.perf_counter() - t0, options=options,
            message=f"{name} cannot satisfy this problem: " + "; ".join(violations),
            info={"violations": violations},
        )
    return PlacementResult(
        strategy=name,
        status=SolveStatus.HEURISTIC,
        layout=layout,
        objective=expected_cost(problem, layout),
        runtime_s=time.perf_counter() - t0,
        options=options,
        message=message,
    )


def round_robin_gpus(layers: int, experts: int, gpus: int) -> np.ndarray:
    """GPU of every expert, [layers, experts]: expert i of layer l on (l * experts + i) mod gpus."""
    return (np.arange(layers)[:, None] * experts + np.arange(experts)[None, :]) % gpus


def round_robin(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Expert i of layer l on GPU (l * experts + i) mod gpus: the paper's round-robin."""
    t0 = time.perf_counter()
    gpus = round_robin_gpus(problem.num_layers, problem.num_experts, problem.num_gpus)
    return _result("round-robin", problem, gpus, options, t0)


def contiguous(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Blocks of consecutive experts per GPU, the serving engines' default.

    Per layer the blocks differ by at most one expert, the larger ones first (vLLM's split:
    with q, r = divmod(experts, gpus) the first r blocks hold q + 1, the others q), block b on
    GPU b.  Where the experts do not divide over the GPUs, each layer's blocks start r GPUs
    further on, so the larger blocks rotate and slots fill evenly (every GPU holds at most
    ceil(layers x experts / gpus) copies); with fewer experts than GPUs that shifts each layer
    by ``experts`` GPUs.
    """
    t0 = time.perf_counter()
    gpus = contiguous_gpus(problem.num_layers, problem.num_experts, problem.num_gpus)
    return _result("contiguous", problem, gpus, options, t0)


def contiguous_gpus(layers: int, experts: int, gpus: int) -> np.ndarray:
    """GPU of every expert, [layers, experts], of ``contiguous`` (its docstring has the rule)."""
    q, r = divmod(experts, gpus)
    e = np.arange(experts)
    big = r * (q + 1)  # experts in the r larger blocks
    block = np.where(e < big, e // (q + 1), r + (e - big) // max(q, 1))
    return (block[None, :] + np.arange(layers)[:, None] * r) % gpus


def _layer_counts(problem: PlacementProblem, order_key: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Experts of one layer per GPU: each to the GPU with the most free slots (then key)."""
    E, m = problem.num_experts, problem.max_per_gpu_per_layer
    take = np.zeros(problem.num_gpus, dtype=np.int64)
    left = free.copy()
    for _ in range(E):
        ok = np.flatnonzero((take < m) & (left > 0))
        g = int(ok[np.lexsort((order_key[ok], -left[ok]))[0]])
        take[g] += 1
        left[g] -= 1
    return take


def random_layout(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """A random layout (seeded by ``options.seed``) that keeps slots balanced.

    Per layer, how many experts each GPU takes is fixed by the most-free-slots rule with random
    tie-breaks (which never gets stuck); then the layer's experts are shuffled into those places.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    free = np.full(G, problem.slots_per_gpu, dtype=np.int64)
    gpus = np.empty((L, E), dtype=np.int64)
    for li in range(L):
        take = _layer_counts(problem, rng.permutation(G), free)
        free -= take
        gpus[li] = rng.permutation(np.repeat(np.arange(G), take))
    return _result("random", problem, gpus, options, t0)


def greedy(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Hottest experts first (all layers), each into the free slot of lowest expected cost.

    Cost of expert (l, i) on GPU h: its expected round-trip hops per token from the origins
    (per origin when the problem has it); ties go to the least loaded GPU, then the lowest
    index.  A GPU is free for layer l while it has a slot and holds fewer than
    max_per_gpu_per_layer experts of l, and while the GPUs left could still take the layer's
    remaining experts (so the greedy never gets stuck).
    """
    t0 = time.perf_counter()
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    m = problem.max_per_gpu_per_layer
    cost = problem.expert_gpu_cost("hops").reshape(L, E, G)
    w = problem.activation
    free = np.full(G, problem.slots_per_gpu, dtype=np.int64)
    per = np.zeros((L, G), dtype=np.int64)
    left_in_layer = np.full(L, E, dtype=np.int64)
    load = np.zeros(G)
    gpus = np.full((L, E), -1, dtype=np.int64)
    for flat in np.lexsort((np.arange(L * E), -w.reshape(-1))):
        li, i = divmod(int(flat), E)
        ok = (free > 0) & (per[li] < m)
        # keep enough room for the layer's other experts and for the later layers' demand
        room_after = np.minimum(free - 1, m - per[li] - 1).clip(min=0)
        spare = np.minimum(free, m - per[li]).clip(min=0)
        total_spare = spare[ok].sum()
        feasible = ok & (total_spare - spare + room_after >= left_in_layer[li] - 1)
        other_need = left_in_layer.sum() - 1
        feasible &= free.sum() - 1 >= other_need
        cand = np.flatnonzero(feasible)
        if cand.size == 0:
            cand = np.flatnonzero(ok)
        if cand.size == 0:
            return _greedy_with_quotas(problem, options, cost, t0, (li, i))
        g = int(cand[np.lexsort((cand, load[cand], cost[li, i, cand]))[0]])
        gpus[li, i] = g
        free[g] -= 1
        per[li, g] += 1
        load[g] += w[li, i]
        left_in_layer[li] -= 1
    return _result("greedy", problem, gpus, options, t0)


def _greedy_with_quotas(
    problem: PlacementProblem,
    options: SolverOptions,
    cost: np.ndarray,
    t0: float,
    stuck_at: tuple[int, int],
) -> PlacementResult:
    """Greedy again, inside per-(layer, GPU) quotas that are feasible by construction.

    Used when the free greedy reaches a dead end (tight slots: the cheap GPUs filled up and a
    later layer found no room).  The quotas are the counts ``placement.spread`` uses (largest
    demand first to the GPUs with most free slots, max-flow when that fails); within them the
    hottest experts still take the cheapest GPU.
    """
    from placement.spread import _counts_per_gpu

    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    quota = _counts_per_gpu(
        np.full(L, E), G, problem.max_per_gpu_per_layer, problem.slots_per_gpu
    )
    w = problem.activation
    load = np.zeros(G)
    gpus = np.full((L, E), -1, dtype=np.int64)
    for flat in np.lexsort((np.arange(L * E), -w.reshape(-1))):
        li, i = divmod(int(flat), E)
        cand = np.flatnonzero(quota[li] > 0)
        g = int(cand[np.lexsort((cand, load[cand], cost[li, i, cand]))[0]])
        gpus[li, i] = g
        quota[li, g] -= 1
        load[g] += w[li, i]
    return heuristic_result(
        "greedy", problem, ExpertLayout.from_primary(gpus, G), options, t0,
        message=(
            f"the free greedy reached a dead end at expert {stuck_at[1]} of layer row"
            f" {stuck_at[0]}; placed greedily within per-layer GPU quotas instead"
        ),
    )
