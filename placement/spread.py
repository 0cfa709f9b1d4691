"""Spread the experts a server received over its GPUs, respecting slots, balancing load."""

from __future__ import annotations

import networkx as nx
import numpy as np

from placement.problem import PlacementProblem
from traces.errors import InputError


def _counts_per_gpu(demand: np.ndarray, gpus: int, per_layer: int, slots: int) -> np.ndarray:
    """How many experts of each layer each GPU of a server takes, [layers, gpus].

    Largest demand first, each to the GPUs with the most free slots (the Gale-Ryser greedy);
    if that gets stuck, an exact max-flow (layers -> GPUs -> sink) decides.
    """
    n = np.zeros((len(demand), gpus), dtype=np.int64)
    free = np.full(gpus, slots, dtype=np.int64)
    ok = True
    for li in np.lexsort((np.arange(len(demand)), -demand)):
        need = int(demand[li])
        while need:
            cand = np.flatnonzero((n[li] < per_layer) & (free > 0))
            if cand.size == 0:
                ok = False
                break
            g = int(cand[np.lexsort((cand, -free[cand]))[0]])
            n[li, g] += 1
            free[g] -= 1
            need -= 1
        if not ok:
            break
    if ok:
        return n
    flow = nx.DiGraph()
    for li, d in enumerate(demand):
        flow.add_edge("src", ("l", li), capacity=int(d))
        for g in range(gpus):
            flow.add_edge(("l", li), ("g", g), capacity=per_layer)
    for g in range(gpus):
        flow.add_edge(("g", g), "sink", capacity=slots)
    value, f = nx.maximum_flow(flow, "src", "sink")
    if value < demand.sum():
        raise InputError("placement: a server received more experts than its GPUs have slots for")
    for li in range(len(demand)):
        for g in range(gpus):
            n[li, g] = f[("l", li)].get(("g", g), 0)
    return n


def spread_over_gpus(problem: PlacementProblem, expert_server: np.ndarray) -> np.ndarray:
    """GPU per expert [layers, experts] from a server per expert.

    Inside a server every GPU is at distance 0 from the others (weight-0 links), so the choice
    does not change the objective; it balances load instead.  First the number of experts of
    each layer per GPU is fixed so that slots hold; then, per layer, hottest experts first, each
    goes to the least loaded GPU that still has room for that layer (ties: lowest GPU index).
    """
    L, E = problem.activation.shape
    gpu_of = np.full((L, E), -1, dtype=np.int64)
    load = np.zeros(problem.num_gpus)
    for s in range(problem.num_servers):
        members = problem.server_gpus(s)
        demand = (expert_server == s).sum(axis=1)
        counts = _counts_per_gpu(
            demand, len(members), problem.max_per_gpu_per_layer, problem.slots_per_gpu
        )
        for li in np.flatnonzero(demand):
            room = counts[li].copy()
            experts = np.flatnonzero(expert_server[li] == s)
            order = experts[np.lexsort((experts, -problem.activation[li, experts]))]
            for i in order:
                cand = np.flatnonzero(room > 0)
                j = int(cand[np.lexsort((cand, load[members[cand]]))[0]])
                g = int(members[j])
                gpu_of[li, i] = g
                load[g] += problem.activation[li, i]
                room[j] -= 1
    return gpu_of
