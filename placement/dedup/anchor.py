"""Without replicas: each layer's copies on EPLB's GPUs wherever their server is EPLB's.

Which GPU of a server holds a copy changes no de-duplicated copy (``packing``), and at equal
loads it does not change a layer's busiest GPU either, but it changes the replay: a GPU's
compute queues behind the other micro-batch's layer on the same GPU, so which GPUs are busy
together across layers sets how the micro-batches in flight overlap.  On DeepSeek-R1 at EP32
(k=4 fat tree, pooled NICs, ``deepep-normal``), EPLB's layout with its GPUs permuted at random
inside each server (the same servers, copies and per-layer GPU loads) replays 0.3-1.3 % slower
at p99 than EPLB's own (4 permutations, benchmarks/bench_dedup.py's ep32 trace), and ``dedup``'s
layers re-packed by LPT were 1.4 % slower for that reason alone: 53 of its 58 layers had EPLB's
servers.  A GPU choice that buys nothing is noise to the replay, so ``dedup`` does not make one:

``anchor_layer``: a copy whose server is its expert's server in EPLB's layer keeps EPLB's GPU;
the other copies of a server (the ones the search moved there) take the slots the moved-away
experts freed, heaviest first to the lightest GPU with room (LPT), then exchanges inside the
server while its busiest GPU is above ``cap``.  The anchored layer is taken when its busiest GPU
is at most ``cap`` (the straggler trade's: EPLB's busiest GPU, or the layer's own when it is
higher and the trade kept the layer), else the layer stays as packed.  A layer with EPLB's
servers so becomes EPLB's layer exactly.  Only for layers of one copy per expert.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from placement.dedup.layers import LayerChoice
from placement.dedup.packing import EPS, exchange
from placement.problem import PlacementProblem


def anchor_layer(
    problem: PlacementProblem, x: np.ndarray, ly: LayerChoice, ref_gpu: np.ndarray, cap: float
) -> LayerChoice:
    """``ly`` (one copy per expert) with its copies anchored to ``ref_gpu`` (EPLB's GPU per
    expert) on the tokens ``x`` [tokens, k], or ``ly`` when that puts a GPU above ``cap``."""
    E, G, gs = problem.num_experts, problem.num_gpus, problem.gpu_server
    gpu = np.full(E, -1, dtype=np.int64)
    for e, g in ly.copies:
        if gpu[e] >= 0:
            return ly  # replicas: not anchored
        gpu[e] = g
    if (gpu < 0).any() or ref_gpu.shape != (E,) or (ref_gpu < 0).any():
        return ly
    weight = np.bincount(x.ravel(), minlength=E).astype(np.float64)
    new = np.where(gs[ref_gpu] == gs[gpu], ref_gpu, -1)
    room = np.bincount(gpu, minlength=G) - np.bincount(new[new >= 0], minlength=G)
    if (room < 0).any():
        return ly  # EPLB's GPU holds more of them than the layer's quota there
    load = np.bincount(new[new >= 0], weights=weight[new >= 0], minlength=G)
    movers = np.flatnonzero(new < 0)
    for e in movers[np.lexsort((movers, -weight[movers]))].tolist():
        ok = np.flatnonzero((gs == gs[gpu[e]]) & (room > 0))
        g = int(ok[np.argmin(load[ok])])
        new[e], room[g], load[g] = g, room[g] - 1, load[g] + weight[e]
    for s in range(problem.num_servers):  # a server without movers is EPLB's: at most cap
        gpus = problem.server_gpus(s)
        on = np.flatnonzero(gs[new] == s)
        local = np.searchsorted(gpus, new[on])
        new[on] = gpus[exchange(weight[on], local, len(gpus), enough=cap)]
    if np.bincount(new, weights=weight, minlength=G).max() > cap + EPS:
        return ly
    return dataclasses.replace(ly, copies=[(e, int(new[e])) for e in range(E)])
