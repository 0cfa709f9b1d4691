"""The lower bound that a dedup result reports: per layer the exact optimum of tiny layers,
the replica bound with replicas, else the transport bound (:mod:`placement.dedup.bound`)."""

from __future__ import annotations

import numpy as np

from placement.dedup.bound import (
    MAX_ENUMERATED_LAYOUTS,
    exact_layer,
    layouts_count,
    replica_bound,
    transport_bound,
)
from placement.dedup.deadline import Deadline
from placement.problem import PlacementProblem, SolverOptions


def primary_caps(cap: np.ndarray, num_experts: int) -> np.ndarray:
    """Primaries per server: the experts split in proportion to its copies (largest remainder)."""
    share = num_experts * cap / cap.sum()
    out = np.floor(share).astype(np.int64)
    for s in np.argsort(-(share - out), kind="stable")[: num_experts - int(out.sum())]:
        out[s] += 1
    return np.minimum(out, cap)


def sample_bound(
    problem: PlacementProblem, cost: np.ndarray, own: np.ndarray, quota: np.ndarray,
    options: SolverOptions, forced: bool, deadline: Deadline,
) -> tuple[float, str]:
    """Lower bound of the sample cost per token (all layers) and which bound it is; nan and
    ``not computed`` when the time limit ends it before every layer has its bound."""
    sample = problem.token_sample
    assert sample is not None
    L, E, S = problem.num_layers, problem.num_experts, problem.num_servers
    gs = problem.gpu_server
    total, kinds = 0.0, set()
    for li in range(L):
        if deadline.passed():
            return float("nan"), f"not computed (time limit; {li} of {L} layers bounded)"
        x = sample.experts[:, li, :].astype(np.int64)
        cap = np.bincount(gs, weights=quota[li], minlength=S).astype(np.int64)
        if problem.num_redundant:
            total += replica_bound(x, cost, own, E, int(cap.sum()), int(cap.max()))
            kinds.add("replica")
            continue
        if not forced:  # any per-layer split of the slots: relax each server to its maximum
            cap = np.bincount(gs, minlength=S) * min(problem.max_per_gpu_per_layer,
                                                     problem.slots_per_gpu)
        if forced and layouts_count(E, primary_caps(cap, E)) <= MAX_ENUMERATED_LAYOUTS:
            total += exact_layer(x, cost, E, primary_caps(cap, E))[0]
            kinds.add("exact")
        else:
            lp = transport_bound(x, cost, E, cap, options, max(1e-3, deadline.left_s()))
            if lp is None:
                return float("nan"), f"not computed (layer {li}'s transport LP unsolved)"
            total += lp
            kinds.add("transport")
    return total / sample.num_tokens, "+".join(sorted(kinds))
