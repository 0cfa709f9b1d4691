"""``eplb``: our implementation of DeepSeek's published expert-parallel load balancer (EPLB).

Per MoE layer, with E logical experts in ``expert_groups`` groups, E + R physical copies (R =
``num_redundant``), S servers (nodes) of equal size and G GPUs:

* hierarchical (groups divisible by servers): (1) pack the expert groups onto servers, heaviest
  group first into the lightest server that still has room for a group, so every server gets
  groups/S groups; (2) inside each server, replicate its experts into its (E + R) / S copies,
  each extra copy going to the expert with the highest load per copy; (3) pack the copies
  (load = expert load / copies) onto the server's GPUs, heaviest first into the lightest GPU
  with room, (E + R) / G copies per GPU;
* global (otherwise): the same with the whole cluster as one node and one group.

One rule is ours: two copies of one expert never share a GPU (a copy goes to the lightest GPU
with room that does not hold that expert yet; an expert gets at most as many copies as the node
has GPUs).  Loads are the activation p[l, i]; the result ignores the topology's distances,
as EPLB does.
"""

from __future__ import annotations

import time

import numpy as np

from placement.baselines import heuristic_result
from placement.problem import ExpertLayout, PlacementProblem, PlacementResult, SolverOptions
from traces.infra.errors import InputError


def balanced_packing(
    weights: np.ndarray, num_packs: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """Pack index of every item: heaviest first into the lightest pack with room.

    Every pack takes exactly len(weights) / num_packs items.  With ``labels``, a pack never takes
    two items of the same label when another pack with room can.
    """
    n = len(weights)
    per = n // num_packs
    pack_load = np.zeros(num_packs)
    pack_count = np.zeros(num_packs, dtype=np.int64)
    held: list[set[int]] = [set() for _ in range(num_packs)]
    out = np.empty(n, dtype=np.int64)
    for item in np.lexsort((np.arange(n), -weights)):
        room = pack_count < per
        if labels is not None:
            lab = int(labels[item])
            clean = room & np.array([lab not in h for h in held])
            if clean.any():
                room = clean
        cand = np.flatnonzero(room)
        p = int(cand[np.argmin(pack_load[cand])])
        out[item] = p
        pack_load[p] += weights[item]
        pack_count[p] += 1
        if labels is not None:
            held[p].add(int(labels[item]))
    return out


def replicate(weights: np.ndarray, num_copies: int, max_copies: int) -> np.ndarray:
    """Copies per expert: one each, then each extra copy to the highest load per copy."""
    count = np.ones(len(weights), dtype=np.int64)
    for _ in range(num_copies - len(weights)):
        per_copy = np.where(count < max_copies, weights / count, -np.inf)
        count[int(np.argmax(per_copy))] += 1
    return count


def _place_node(
    weights: np.ndarray, experts: np.ndarray, copies_total: int, gpus: np.ndarray
) -> list[tuple[int, int]]:
    """(expert, gpu) of every copy of one node's experts."""
    count = replicate(weights, copies_total, len(gpus))
    item_expert = np.repeat(np.arange(len(experts)), count)
    item_weight = (weights / count)[item_expert]
    pack = balanced_packing(item_weight, len(gpus), labels=item_expert)
    return [(int(experts[e]), int(gpus[p])) for e, p in zip(item_expert, pack, strict=True)]


def eplb(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    t0 = time.perf_counter()
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    S = problem.num_servers
    phys = problem.physical_per_layer
    gps = problem.gpus_per_server
    if phys % G:
        raise InputError(
            f"eplb: {E} experts + {problem.num_redundant} redundant = {phys} copies per layer do"
            f" not divide over {G} GPUs; choose --replicas so that (experts + replicas) is a"
            " multiple of the GPU count"
        )
    groups = problem.expert_groups
    hierarchical = groups % S == 0 and (gps == gps[0]).all() and phys % S == 0
    servers = [problem.server_gpus(s) for s in range(S)]
    copies: list[list[tuple[int, int]]] = []
    for li in range(L):
        w = problem.activation[li].astype(np.float64)
        if hierarchical:
            size = E // groups
            group_w = w.reshape(groups, size).sum(axis=1)
            node_of_group = balanced_packing(group_w, S)
            row: list[tuple[int, int]] = []
            for s in range(S):
                experts = np.concatenate(
                    [np.arange(g * size, (g + 1) * size)
                     for g in np.flatnonzero(node_of_group == s)]
                )
                row += _place_node(w[experts], experts, phys // S, servers[s])
        else:
            row = _place_node(w, np.arange(E), phys, np.arange(G))
        copies.append(row)
    reps = max(np.bincount([e for e, _ in row]).max() for row in copies)
    out = np.full((L, E, int(reps)), -1, dtype=np.int64)
    for li, row in enumerate(copies):
        nxt = np.zeros(E, dtype=np.int64)
        for e, g in sorted(row):
            out[li, e, nxt[e]] = g
            nxt[e] += 1
    variant = "hierarchical" if hierarchical else "global"
    res = heuristic_result(
        "eplb", problem, ExpertLayout(out, G), options, t0,
        message=f"EPLB ({variant}): load-balancing heuristic, ignores distances",
    )
    res.info["variant"] = variant
    return res
