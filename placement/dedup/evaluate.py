"""The de-duplicated network cost of a layout on a token sample, counted independently.

Rule (DeepEP's inter-node dispatch, the simulator's ``--dispatch deepep-normal``): a token
crosses the network once per remote server that hosts any of its experts at that MoE layer (the
copy of an expert it uses is the replica nearest its origin GPU, ties to the lowest replica
index) and fans out inside that server; combine is the mirror image.  One such crossing is a *remote
copy*; it costs ``server_cost[origin GPU, server]``: the round trip from the origin to that
server (hops there and back, or dispatch + combine bytes x seconds per byte on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.problem import ExpertLayout, PlacementProblem
from traces.infra.errors import InputError


def server_cost(problem: PlacementProblem, metric: str = "hops") -> np.ndarray:
    """Cost of one remote copy from origin GPU o to server s, [gpus, servers]; 0 on o's server.

    The cheapest GPU of the server (the network part of the route; the fan-out inside the
    server is NVLink and not charged).
    """
    rt = problem.round_trip(metric)
    S = problem.num_servers
    out = np.empty((problem.num_gpus, S))
    for s in range(S):
        out[:, s] = rt[:, problem.server_gpus(s)].min(axis=1)
    out[np.arange(problem.num_gpus), problem.gpu_server] = 0.0
    return out


def server_distance(problem: PlacementProblem) -> np.ndarray:
    """Distance from origin GPU o to the nearest GPU of server s, [gpus, servers]."""
    d = problem.distance
    return np.stack(
        [d[:, problem.server_gpus(s)].min(axis=1) for s in range(problem.num_servers)], axis=1
    )


@dataclass(frozen=True)
class DedupCost:
    """A layout's network cost on a token sample, per token (all MoE layers summed)."""

    cost_per_token: float  # sum over layers of the remote copies' costs, mean over tokens
    copies_per_token_layer: float  # de-duplicated remote copies per token per MoE layer
    routes_per_token_layer: float  # remote routes without de-duplication, same normalisation
    layer_cost: np.ndarray  # [layers] cost per token of each layer


def layer_hosts(
    experts: np.ndarray, origins: np.ndarray, gpus_layer: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """Host GPU of every route of one layer, [tokens, k]: the nearest replica to the origin."""
    cand = gpus_layer[experts]  # [T, k, R]
    if cand.shape[-1] == 1:
        return cand[..., 0]
    d = np.where(cand >= 0, distance[origins[:, None, None], np.maximum(cand, 0)], np.inf)
    return np.take_along_axis(cand, np.argmin(d, axis=-1)[..., None], axis=-1)[..., 0]


def remote_servers(
    problem: PlacementProblem, experts: np.ndarray, origins: np.ndarray, gpus_layer: np.ndarray
) -> tuple[np.ndarray, int]:
    """One layer: the remote servers each token sends to, [tokens, servers] bool, and the
    remote routes (before de-duplication)."""
    gs = problem.gpu_server
    T = experts.shape[0]
    hs = gs[layer_hosts(experts, origins, gpus_layer, problem.distance)]  # [T, k]
    own = gs[origins]
    used = np.zeros((T, problem.num_servers), dtype=bool)
    used[np.repeat(np.arange(T), hs.shape[1]), hs.ravel()] = True
    used[np.arange(T), own] = False
    return used, int((hs != own[:, None]).sum())


def dedup_cost(problem: PlacementProblem, layout: ExpertLayout, metric: str = "hops") -> DedupCost:
    """Exact de-duplicated cost of ``layout`` on the problem's token sample."""
    sample = problem.token_sample
    if sample is None:
        raise InputError(
            "placement: the de-duplicated cost needs per-token routing (a trace), not load counts"
        )
    cs = server_cost(problem, metric)
    T, L = sample.num_tokens, problem.num_layers
    o = sample.origin_gpu.astype(np.int64)
    layer_cost = np.zeros(L)
    copies = routes = 0
    for li in range(L):
        used, remote = remote_servers(problem, sample.experts[:, li, :].astype(np.int64), o,
                                      layout.expert_gpus[li])
        routes += remote
        copies += int(used.sum())
        layer_cost[li] = float((used * cs[o]).sum()) / T
    return DedupCost(
        cost_per_token=float(layer_cost.sum()),
        copies_per_token_layer=copies / (T * L),
        routes_per_token_layer=routes / (T * L),
        layer_cost=layer_cost,
    )


def layer_gpu_loads(problem: PlacementProblem, layout: ExpertLayout) -> np.ndarray:
    """Routes of the token sample each GPU serves per layer, [layers, gpus] (nearest replica)."""
    sample = problem.token_sample
    if sample is None:
        raise InputError("placement: per-layer GPU loads need the token sample")
    o = sample.origin_gpu.astype(np.int64)
    out = np.zeros((problem.num_layers, problem.num_gpus))
    for li in range(problem.num_layers):
        hosts = layer_hosts(sample.experts[:, li, :].astype(np.int64), o,
                            layout.expert_gpus[li], problem.distance)
        out[li] = np.bincount(hosts.ravel(), minlength=problem.num_gpus)
    return out


def imbalance(loads: np.ndarray) -> float:
    """Mean over layers of the busiest GPU's load over the mean GPU load (1 = balanced)."""
    mean = loads.mean(axis=1)
    ok = mean > 0
    return float((loads.max(axis=1)[ok] / mean[ok]).mean()) if ok.any() else 1.0
