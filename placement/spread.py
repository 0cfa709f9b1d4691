"""Spread the experts a server received over its GPUs, respecting slots, balancing load."""

from __future__ import annotations

import networkx as nx
import numpy as np

from placement.problem import PlacementProblem
from traces.infra.errors import InputError


def _counts_per_gpu(demand: np.ndarray, gpus: int, per_layer: int, slots: int) -> np.ndarray:
    """How many experts of each layer each GPU of a server takes, [layers, gpus].

    Largest demand first, each to the GPUs with the most free slots (the Gale-Ryser greedy);
    if that gets stuck, an exact max-flow (layers -> GPUs -> sink) decides.
    """
    n = [[0] * gpus for _ in range(len(demand))]
    free = [slots] * gpus
    ok = True
    for li in np.lexsort((np.arange(len(demand)), -demand)).tolist():
        row = n[li]
        for _ in range(int(demand[li])):
            best = -1
            for g in range(gpus):
                if row[g] < per_layer and free[g] > 0 and (best < 0 or free[g] > free[best]):
                    best = g
            if best < 0:
                ok = False
                break
            row[best] += 1
            free[best] -= 1
        if not ok:
            break
    if ok:
        return np.array(n, dtype=np.int64).reshape(len(demand), gpus)
    return _counts_by_flow(demand, gpus, per_layer, slots)


def _counts_by_flow(demand: np.ndarray, gpus: int, per_layer: int, slots: int) -> np.ndarray:
    n = np.zeros((len(demand), gpus), dtype=np.int64)
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


def spread_items(
    problem: PlacementProblem,
    item_layer: np.ndarray,
    item_weight: np.ndarray,
    item_unit: np.ndarray,
    unit_gpus: list[np.ndarray],
) -> np.ndarray:
    """GPU of every item (an expert copy) from the unit (a set of GPUs) that holds it.

    Inside a unit every GPU costs the same (that is what makes it a unit), so the choice
    balances load instead.  First the number of items of each layer per GPU is fixed so that
    slots hold; then, heaviest items first over all layers (longest processing time first),
    each goes to the least loaded GPU that still has room for its layer (ties: lowest index).
    Callers never put two copies of one expert in one unit of several GPUs unless the unit has
    room to separate them.
    """
    L = problem.num_layers
    gpu_of = np.full(len(item_layer), -1, dtype=np.int64)
    load = np.zeros(problem.num_gpus)
    for u, members in enumerate(unit_gpus):
        mine = np.flatnonzero(item_unit == u)
        if mine.size == 0:
            continue
        if len(members) == 1:
            gpu_of[mine] = members[0]
            continue
        demand = np.bincount(item_layer[mine], minlength=L)
        counts = _counts_per_gpu(
            demand, len(members), problem.max_per_gpu_per_layer, problem.slots_per_gpu
        )
        mem = members.tolist()
        load_m = [float(load[g]) for g in mem]
        room = counts.tolist()  # [layer][gpu of the unit]
        order = mine[np.lexsort((mine, -item_weight[mine]))].tolist()  # heaviest first, all layers
        layer_of = item_layer.tolist()
        weight_of = item_weight.tolist()
        for it in order:
            r = room[layer_of[it]]
            j = -1
            for c in range(len(mem)):
                if r[c] > 0 and (j < 0 or load_m[c] < load_m[j]):
                    j = c
            gpu_of[it] = mem[j]
            load_m[j] += weight_of[it]
            r[j] -= 1
        load[members] = load_m
    return gpu_of


def spread_over_gpus(problem: PlacementProblem, expert_server: np.ndarray) -> np.ndarray:
    """GPU per expert [layers, experts] from a server per expert (one copy each)."""
    L, E = problem.activation.shape
    units = [problem.server_gpus(s) for s in range(problem.num_servers)]
    layer = np.repeat(np.arange(L), E)
    gpus = spread_items(
        problem, layer, problem.activation.reshape(-1), expert_server.reshape(-1), units
    )
    return gpus.reshape(L, E)
