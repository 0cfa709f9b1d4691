"""One independent checker for every strategy's layout."""

from __future__ import annotations

import numpy as np

from placement.problem import ExpertLayout, PlacementProblem


def check_layout(problem: PlacementProblem, layout: ExpertLayout) -> list[str]:
    """Every violation of the problem's rules, in words; an empty list means valid."""
    out: list[str] = []
    eg = layout.expert_gpus
    want = (problem.num_layers, problem.num_experts)
    if eg.ndim != 3 or eg.shape[:2] != want:
        return [f"layout shape {list(eg.shape)} does not match (layers, experts) {list(want)}"]
    if eg.shape[2] < 1:
        return ["layout has no replica column"]
    if (eg[:, :, 0] < 0).any():
        n = int((eg[:, :, 0] < 0).sum())
        out.append(f"{n} experts are not placed")
    if (eg >= problem.num_gpus).any() or (eg < -1).any():
        out.append(f"layout names GPUs outside 0..{problem.num_gpus - 1}")
        return out
    present = eg >= 0
    # replicas: packed left, each on a distinct GPU
    if (present[:, :, 1:] & ~present[:, :, :-1]).any():
        out.append("replica columns are not packed (a replica follows a missing one)")
    s = np.sort(np.where(present, eg, -1 - np.arange(eg.shape[2])), axis=2)
    if (s[:, :, 1:] == s[:, :, :-1]).any():
        out.append("an expert has two replicas on the same GPU")
    gpu_total = np.bincount(eg[present], minlength=problem.num_gpus)
    over = np.flatnonzero(gpu_total > problem.slots_per_gpu)
    if over.size:
        out.append(
            f"GPU {int(over[0])} holds {int(gpu_total[over[0]])} experts, more than its"
            f" {problem.slots_per_gpu} slots ({over.size} GPUs over)"
        )
    copies = present.sum(axis=(1, 2))
    if (copies > problem.physical_per_layer).any():
        li = int(np.flatnonzero(copies > problem.physical_per_layer)[0])
        out.append(
            f"layer row {li} has {int(copies[li])} expert copies, more than {problem.num_experts}"
            f" experts + {problem.num_redundant} redundant"
        )
    eps = problem.balance_eps
    if eps is not None and not out:
        load = _gpu_loads(problem, eg)
        cap = (1 + eps) * float(problem.activation.sum()) / problem.num_gpus
        worst = int(np.argmax(load))
        if load[worst] > cap * (1 + 1e-9) + 1e-12:
            out.append(
                f"GPU {worst} carries an expected {load[worst]:.4g} routed tokens per token, more"
                f" than (1 + {eps:g}) x the mean = {cap:.4g} (compute balance)"
            )
    for li in range(problem.num_layers):
        per = np.bincount(eg[li][present[li]], minlength=problem.num_gpus)
        bad = np.flatnonzero(per > problem.max_per_gpu_per_layer)
        if bad.size:
            out.append(
                f"layer row {li}: GPU {int(bad[0])} holds {int(per[bad[0]])} experts of the"
                f" layer, more than {problem.max_per_gpu_per_layer}"
            )
            break
    return out


def _gpu_loads(problem: PlacementProblem, eg: np.ndarray) -> np.ndarray:
    """Expected routed tokens per token on each GPU, all layers; tokens use the nearest copy.

    Written independently of the solvers: per (layer, expert, origin), the copy with the
    smallest distance from the origin (ties: lowest replica index) takes the origin's share.
    """
    L, E, R = eg.shape
    a = problem.origin_split()  # [L, E, G]
    load = np.zeros(problem.num_gpus)
    for o in range(problem.num_gpus):
        d = np.where(eg >= 0, problem.distance[o][np.maximum(eg, 0)], np.inf)  # [L, E, R]
        host = np.take_along_axis(eg, np.argmin(d, axis=2)[..., None], axis=2)[..., 0]
        load += np.bincount(host.ravel(), weights=a[:, :, o].ravel(), minlength=load.size)
    return load
