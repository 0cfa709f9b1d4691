"""The paper's ILP and ILPLoad and the project's variants, solved with HiGHS (highspy).

Variables x[l, i, u] in {0, 1}: expert i of MoE layer l on unit u (a server, or a GPU when the
GPUs of a server do not cost the same).  Minimise sum cost[l, i, u] * x[l, i, u] subject to
``assign[l,i]`` (each expert placed once), ``cap_layer[l,u]`` (experts of one layer per unit:
GPUs x max_per_gpu_per_layer) and ``cap_total[u]`` (experts per unit: GPUs x slots_per_gpu).

* ``ilp`` (paper): cost = (top_k / experts) x c[u], c[u] the expected round-trip hops from a
  token's origin; ``ilp-load`` (paper's ILPLoad): measured p[l, i] x c[u].
* ``ilp-origin``: cost[l, i, u] = sum over origins o of a[l, i, o] x hops(o <-> u), with
  activation measured per origin GPU, so experts move towards the tokens that use them.
* ``ilp-bytes``: the same with seconds on the wire, dispatch_bytes x s/B(o -> u) +
  combine_bytes x s/B(u -> o), from link bandwidths along the routed paths.
* ``balance_eps`` adds ``balance[u]``: expected token load of unit u <= GPUs x (1 + eps) x mean;
  with load-proportional costs (``ilp-load``, ``ilp-bytes`` without per-origin activation)
  solved by decomposition (``placement.balance``), the MIP only on small models.
* ``num_redundant`` > 0 switches to the replica model (``placement.replicas``).

The model itself (shared with the replica warm start) is in ``placement.assignment``.

Structure used for speed: each column has a 1 in one assign row, one cap_layer row and one
cap_total row; cap_layer(l, u) nests in cap_total(u), so the matrix is totally unimodular and the
LP has integral vertices: simplex gives an optimal integer layout (checked; MIP fallback).
Units whose cost columns are equal (and that have as many GPUs) are merged into one class with
summed capacities and split after by dealing its experts cyclically (every unit then gets the
floor or ceiling of each count, within caps); experts of a layer with equal cost rows are
aggregated into one integer column.  On the paper's fat trees this turns 58 x 256 x 32 binaries
into a few thousand columns.
"""

from __future__ import annotations

import numpy as np

from placement.assignment import cost_matrix, solve_assignment
from placement.balance import solve_balanced
from placement.problem import PlacementProblem, PlacementResult, SolverOptions
from placement.replicas import solve_replicas
from traces.infra.errors import InputError


def server_cost(problem: PlacementProblem) -> np.ndarray:
    """c[s]: mean over the server's GPUs of the expected round-trip distance from origins."""
    gc = problem.gpu_cost()
    counts = np.bincount(problem.gpu_server)
    return np.bincount(problem.gpu_server, weights=gc) / counts


def _uniform(problem: PlacementProblem) -> np.ndarray:
    # rounded: measured loads that sum to top_k up to float error must not perturb the model
    k = np.round(problem.activation.sum(axis=1, keepdims=True), 9)
    return np.broadcast_to(k / problem.num_experts, problem.activation.shape).copy()


def _solve(
    problem: PlacementProblem, options: SolverOptions, name: str, metric: str,
    weights: np.ndarray, per_origin: bool,
) -> PlacementResult:
    if problem.num_redundant > 0:
        if problem.balance_eps is not None:
            raise InputError(
                "placement: replicas together with the compute-balance constraint are not"
                " supported; drop --balance-eps or --replicas"
            )
        return solve_replicas(problem, options, name, metric, weights, per_origin)
    rt = problem.round_trip(metric)
    cost_g = cost_matrix(problem, metric, weights, per_origin)

    def exact(opts: SolverOptions) -> PlacementResult:
        return solve_assignment(problem, opts, name, cost_g, rt=rt, weights=weights)

    if problem.balance_eps is not None and not per_origin and weights is problem.activation:
        res = solve_balanced(problem, options, name, problem.origins @ rt, exact)
    else:
        res = exact(options)
    res.info["metric"] = metric
    return res


def ilp_uniform(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILP: every expert equally likely, p = top_k / experts."""
    return _solve(problem, options, "ilp", "hops", _uniform(problem), per_origin=False)


def ilp_load(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The paper's ILPLoad: measured activation p[l, i]."""
    return _solve(problem, options, "ilp-load", "hops", problem.activation, per_origin=False)


def ilp_origin(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """ILPLoad with activation per origin GPU: experts move towards the tokens using them."""
    return _solve(problem, options, "ilp-origin", "hops", problem.activation, per_origin=True)


def ilp_bytes(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Seconds on the wire (bytes x 1/bandwidth along the routes) instead of hops."""
    per_origin = problem.origin_activation is not None
    return _solve(problem, options, "ilp-bytes", "wire", problem.activation, per_origin)
