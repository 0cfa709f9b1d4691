"""Routing statistics as arrays and DataFrames (the strategy's activation weights among them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace

PAIR_KEYS_PER_PASS = 1 << 22  # bounds the temporary key array of pair counting (32 MiB)


def expert_counts(blocks: Iterable[RoutingTrace]) -> np.ndarray:
    """Routes per expert [moe_layers, experts] summed over all blocks (streams)."""
    counts: np.ndarray | None = None
    for b in blocks:
        m = b.model
        if counts is None:
            counts = np.zeros((m.num_moe_layers, m.num_routed_experts), dtype=np.int64)
        for li in range(m.num_moe_layers):  # per layer: small int64 temporaries
            ids = b.experts[:, li, :].astype(np.int64).ravel()
            counts[li] += np.bincount(ids, minlength=m.num_routed_experts)
    if counts is None:
        raise ValueError("no trace blocks given")
    return counts


def activation_probability(counts: np.ndarray, model: ModelSpec) -> np.ndarray:
    """p[l, i]: probability that a token routes to expert i at layer l (rows sum to top_k).

    This is the paper's ILPLoad weight; the uniform ILP uses top_k / experts everywhere.
    """
    totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
    tokens = np.where(totals > 0, totals / model.top_k, 1.0)
    return counts / tokens


def max_over_mean(loads: np.ndarray) -> np.ndarray:
    """Imbalance of each row of ``loads`` (one row per layer): its maximum over its mean, 0 for
    an empty row (1 = balanced).  The one rule behind every ``*_max_over_mean`` column."""
    mean = loads.mean(axis=1)
    return np.divide(loads.max(axis=1), mean, out=np.zeros_like(mean, dtype=np.float64),
                     where=mean > 0)


def summarize_load(counts: np.ndarray, model: ModelSpec) -> pd.DataFrame:
    """One row per MoE layer: routes, busiest expert, mean, and imbalance (max / mean)."""
    mean = counts.mean(axis=1)
    mx = counts.max(axis=1)
    return pd.DataFrame(
        {
            "layer": np.asarray(model.moe_layer_indices, dtype=np.int64),
            "routes": counts.sum(axis=1),
            "max_expert_routes": mx,
            "mean_expert_routes": mean,
            "imbalance_max_over_mean": max_over_mean(counts),
        }
    )


@dataclass(frozen=True, eq=False)
class TraceStats:
    """Routing statistics of a whole trace, accumulated block by block.

    ``counts[l, i]``: routes to expert i at MoE layer l.  ``coactivation[l, i, j]``: tokens
    that chose both i and j at layer l (the diagonal equals ``counts``).  ``transitions[l, i,
    j]``: tokens that chose i at MoE layer l and j at MoE layer l + 1.  ``gpu_routes[l, g]``:
    routes landing on GPU g at layer l under a layout (when one was given).
    """

    model: ModelSpec
    num_tokens: int
    counts: np.ndarray
    coactivation: np.ndarray | None = None
    transitions: np.ndarray | None = None
    gpu_routes: np.ndarray | None = None


def _add_pair_counts(a: np.ndarray, b: np.ndarray, num_experts: int, out: np.ndarray) -> None:
    """out[l, i, j] += tokens with i among a[t, l, :] and j among b[t, l, :].

    One layer at a time (a cache-sized [E * E] histogram) and in passes of tokens so that the
    temporary key array stays below ``PAIR_KEYS_PER_PASS`` entries.
    """
    n, layers, k = a.shape
    E = num_experts
    step = max(1, PAIR_KEYS_PER_PASS // (k * k))
    for li in range(layers):
        hist = out[li].reshape(-1)
        for s in range(0, n, step):
            x = a[s : s + step, li].astype(np.int64)
            y = b[s : s + step, li].astype(np.int64)
            keys = x[:, :, None] * E + y[:, None, :]
            hist += np.bincount(keys.ravel(), minlength=E * E)


def summarize_trace(
    blocks: Iterable[RoutingTrace],
    *,
    pairs: bool = True,
    hosts: Callable[[RoutingTrace], np.ndarray] | None = None,
    num_gpus: int = 0,
) -> TraceStats:
    """Stream over trace blocks once and accumulate every statistic (bounded memory).

    ``pairs`` adds co-activation and adjacent-layer transitions (cost grows with top_k^2).
    ``hosts(block)`` returns the host GPU of every route, [tokens, layers, k], under a layout;
    with it, routes per GPU and layer are counted over ``num_gpus`` GPUs.
    """
    model: ModelSpec | None = None
    n = 0
    counts = co = tr = gpu = None
    for b in blocks:
        if model is None:
            model = b.model
            L, E = model.num_moe_layers, model.num_routed_experts
            counts = np.zeros((L, E), dtype=np.int64)
            if pairs:
                co = np.zeros((L, E, E), dtype=np.int64)
                tr = np.zeros((max(L - 1, 0), E, E), dtype=np.int64)
            if hosts is not None:
                gpu = np.zeros((L, num_gpus), dtype=np.int64)
        elif b.model != model:
            raise InputError("trace statistics: blocks of different models")
        n += b.num_tokens
        counts += expert_counts([b])
        e = b.experts
        if co is not None and tr is not None:
            _add_pair_counts(e, e, model.num_routed_experts, co)
            if e.shape[1] > 1:
                _add_pair_counts(e[:, :-1], e[:, 1:], model.num_routed_experts, tr)
        if gpu is not None and hosts is not None:
            h = hosts(b).astype(np.int64)
            offs = (np.arange(model.num_moe_layers, dtype=np.int64) * num_gpus)[None, :, None]
            gpu += np.bincount((h + offs).ravel(), minlength=gpu.size).reshape(gpu.shape)
    if model is None or counts is None:
        raise InputError("trace statistics: the trace has no tokens")
    return TraceStats(model, n, counts, co, tr, gpu)


def stats_from_counts(
    model: ModelSpec, counts: np.ndarray, expert_gpus: np.ndarray | None = None,
    num_gpus: int = 0, source: str = "load statistics",
) -> TraceStats:
    """The statistics that routed-token counts alone determine (no tokens, so no pairs).

    ``num_tokens`` is the busiest layer's routes / top_k.  With a single-copy layout
    ``expert_gpus[l, i, 0]``, ``gpu_routes[l, g]`` = sum of counts of the experts on g; with
    replicas the serving copy depends on each token's origin, which counts do not hold.
    """
    counts = np.asarray(counts)
    tokens = int(round(float(counts.sum(axis=1).max()) / model.top_k)) if counts.size else 0
    gpu = None
    if expert_gpus is not None:
        if expert_gpus.shape[2] != 1:
            raise InputError(
                f"{source}: the layout has replicas; which copy serves a route depends on the"
                " token's origin, which load statistics do not record (give a trace)"
            )
        gpu = np.stack([
            np.bincount(expert_gpus[li, :, 0], weights=counts[li], minlength=num_gpus)
            for li in range(counts.shape[0])
        ])
    return TraceStats(model, tokens, counts, gpu_routes=gpu)


def activation_frame(stats: TraceStats) -> pd.DataFrame:
    """One row per (layer, expert): routes and activation probability p[l, i]."""
    m = stats.model
    L, E = stats.counts.shape
    return pd.DataFrame(
        {
            "layer": np.repeat(np.asarray(m.moe_layer_indices, dtype=np.int64), E),
            "expert": np.tile(np.arange(E, dtype=np.int64), L),
            "routes": stats.counts.ravel(),
            "activation_probability": activation_probability(stats.counts, m).ravel(),
        }
    )


def coactivation_frame(stats: TraceStats) -> pd.DataFrame:
    """Pairs i < j chosen together by at least one token: tokens and share of all tokens."""
    if stats.coactivation is None:
        raise InputError("co-activation was not accumulated (summarize_trace(pairs=True))")
    layer, a, b = np.nonzero(np.triu(stats.coactivation, k=1))
    tokens = stats.coactivation[layer, a, b]
    return pd.DataFrame(
        {
            "layer": np.asarray(stats.model.moe_layer_indices, dtype=np.int64)[layer],
            "expert_a": a,
            "expert_b": b,
            "tokens": tokens,
            "probability": tokens / max(stats.num_tokens, 1),
        }
    )


def transition_frame(stats: TraceStats) -> pd.DataFrame:
    """Expert i at MoE layer l to expert j at the next MoE layer: tokens and P(j | i).

    ``probability`` = tokens / routes to i at layer l; it sums to top_k over j.
    """
    if stats.transitions is None:
        raise InputError("transitions were not accumulated (summarize_trace(pairs=True))")
    li, a, b = np.nonzero(stats.transitions)
    tokens = stats.transitions[li, a, b]
    idx = np.asarray(stats.model.moe_layer_indices, dtype=np.int64)
    return pd.DataFrame(
        {
            "layer_from": idx[li],
            "layer_to": idx[li + 1],
            "expert_from": a,
            "expert_to": b,
            "tokens": tokens,
            "probability": tokens / stats.counts[li, a],
        }
    )


def gpu_load_frame(stats: TraceStats, gpu_server: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (layer, GPU): routes landing there and load / mean load of the layer."""
    if stats.gpu_routes is None:
        raise InputError("per-GPU load needs a layout (summarize_trace(hosts=...))")
    L, G = stats.gpu_routes.shape
    mean = stats.gpu_routes.mean(axis=1, keepdims=True)
    rel = np.divide(stats.gpu_routes, mean, out=np.zeros(stats.gpu_routes.shape), where=mean > 0)
    df = pd.DataFrame(
        {
            "layer": np.repeat(np.asarray(stats.model.moe_layer_indices, dtype=np.int64), G),
            "gpu": np.tile(np.arange(G, dtype=np.int64), L),
            "routes": stats.gpu_routes.ravel(),
            "load_over_mean": rel.ravel(),
        }
    )
    if gpu_server is not None:
        df["server"] = np.tile(np.asarray(gpu_server, dtype=np.int64), L)
    return df


def summarize_gpu_load(stats: TraceStats) -> pd.DataFrame:
    """One row per MoE layer: the busiest GPU's routes and its imbalance (max / mean)."""
    if stats.gpu_routes is None:
        raise InputError("per-GPU load needs a layout (summarize_trace(hosts=...))")
    g = stats.gpu_routes
    mean = g.mean(axis=1)
    return pd.DataFrame(
        {
            "layer": np.asarray(stats.model.moe_layer_indices, dtype=np.int64),
            "busiest_gpu": g.argmax(axis=1),
            "max_gpu_routes": g.max(axis=1),
            "mean_gpu_routes": mean,
            "gpu_imbalance_max_over_mean": max_over_mean(g),
        }
    )
