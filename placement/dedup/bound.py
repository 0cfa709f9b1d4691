"""Lower bounds on one layer's de-duplicated cost, and the exact optimum of tiny layers.

A token pays ``cost[t, s]`` once per remote server s it uses; a server holds at most
``m = min(top_k, copies a server holds)`` of its experts, so the token pays at least
``sum over its routes of cost[t, server of the route] / m``.  Without replicas that sum is
linear in the layout, and its minimum under the servers' capacities is a transportation
problem (an LP with integral optimum), solved with HiGHS: the *transport bound*.  With
replicas a route may use any copy; the *replica bound* lets every expert pick its j_e best
servers (a token whose own server holds a copy pays 0, any other pays at least its cheapest
remote server), with sum of j_e at most the layer's copies: separable and convex, so the
greedy on marginal savings is exact.  Both are valid; they are weak where tokens spread over
many servers (LP bounds of hypergraph partitioning are), so the result reports the gap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from placement.lp import Model, run_highs
from placement.outcome import SolveStatus
from placement.problem import SolverOptions

MAX_ENUMERATED_LAYOUTS = 5000


def route_weights(experts: np.ndarray, cost: np.ndarray, num_experts: int) -> np.ndarray:
    """w[e, s] = sum over the tokens using e of cost[t, s], [experts, servers]."""
    T, k = experts.shape
    w = np.zeros((num_experts, cost.shape[1]))
    np.add.at(w, experts.ravel(), np.repeat(cost, k, axis=0))
    return w


def transport_bound(
    experts: np.ndarray, cost: np.ndarray, num_experts: int, caps: np.ndarray,
    options: SolverOptions, time_limit_s: float | None = None,
) -> float | None:
    """The transport bound (no replicas): min sum w[e, s] x[e, s] / m over capacity-feasible x;
    None when HiGHS does not solve the LP to optimality (within ``time_limit_s``)."""
    k = experts.shape[1]
    m = max(1, min(k, int(caps.max())))
    w = route_weights(experts, cost, num_experts) / m
    E, S = w.shape
    model = Model()
    first = model.add_cols(w.reshape(-1), 0.0, 1.0, integer=False)
    col = first + np.arange(E * S)
    r_one = model.add_rows("assign", 1.0, 1.0, E)
    model.add_entries(r_one + np.repeat(np.arange(E), S), col, 1.0)
    r_cap = model.add_rows("cap", 0.0, caps.astype(np.float64), S)
    model.add_entries(r_cap + np.tile(np.arange(S), E), col, 1.0)
    sol = run_highs(model, options, integer=False, time_limit_s=time_limit_s)
    if sol.status is not SolveStatus.OPTIMAL or sol.x is None:
        return None
    return max(0.0, float(sol.outcome.objective))


def replica_bound(
    experts: np.ndarray, cost: np.ndarray, own: np.ndarray, num_experts: int, copies: int,
    max_server_copies: int,
) -> float:
    """The replica bound: every expert on its j_e best servers, sum j_e <= ``copies``."""
    T, k = experts.shape
    S = cost.shape[1]
    remote = np.where(np.arange(S)[None, :] == own[:, None], np.inf, cost)
    cmin = remote.min(axis=1)
    cmin = np.where(np.isfinite(cmin), cmin, 0.0)
    mass = np.zeros((num_experts, S))  # cheapest remote cost of e's tokens, by origin server
    np.add.at(mass, (experts.ravel(), np.repeat(own, k)), np.repeat(cmin, k))
    top = -np.sort(-mass, axis=1)  # per expert, origin servers by mass
    total = mass.sum(axis=1)
    m = max(1, min(k, max_server_copies))
    # marginal saving of the j-th copy is top[:, j - 1]; the first copy is mandatory
    base = float((total - top[:, 0]).sum())
    extra = top[:, 1:].ravel()
    n_extra = max(0, min(copies - num_experts, extra.size))
    if n_extra:
        base -= float(np.sort(extra)[::-1][:n_extra].sum())
    return max(0.0, base) / m


def layouts_count(num_experts: int, caps: np.ndarray) -> int:
    """Number of ways to put the experts on servers with exactly ``caps`` primaries each."""
    n, out = num_experts, 1
    for c in caps.tolist():
        out *= math.comb(n, int(c))
        n -= int(c)
    return out


def server_assignments(num_experts: int, caps: np.ndarray) -> Iterator[np.ndarray]:
    """Every way to put the experts on servers with exactly ``caps`` each (``layouts_count``
    of them, each once: the experts of a server are a combination, not a permutation)."""
    caps_list = [int(c) for c in caps.tolist()]
    if sum(caps_list) != num_experts:
        raise ValueError(f"caps {caps_list} do not hold exactly {num_experts} experts")
    srv = np.zeros(num_experts, dtype=np.int64)

    def rec(rest: tuple[int, ...], s: int) -> Iterator[np.ndarray]:
        if s == len(caps_list) - 1 or not rest:
            srv[list(rest)] = s
            yield srv.copy()
            return
        for chosen in itertools.combinations(rest, caps_list[s]):
            srv[list(chosen)] = s
            yield from rec(tuple(e for e in rest if e not in chosen), s + 1)

    yield from rec(tuple(range(num_experts)), 0)


def exact_layer(
    experts: np.ndarray, cost: np.ndarray, num_experts: int, caps: np.ndarray
) -> tuple[float, np.ndarray]:
    """Optimum and a best server per expert by enumeration (tiny layers, no replicas)."""
    T = experts.shape[0]
    S = cost.shape[1]
    best, best_srv = np.inf, np.zeros(num_experts, dtype=np.int64)
    rows = np.repeat(np.arange(T), experts.shape[1])
    for srv in server_assignments(num_experts, caps):
        used = np.zeros((T, S), dtype=bool)
        used[rows, srv[experts].ravel()] = True
        val = float((used * cost).sum())
        if val < best - 1e-12:
            best, best_srv = val, srv
    return best, best_srv
