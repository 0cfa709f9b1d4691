"""Routing statistics as arrays and DataFrames (the placer's activation weights among them)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from traces.model import ModelSpec
from traces.trace import RoutingTrace


def expert_counts(blocks: Iterable[RoutingTrace]) -> np.ndarray:
    """Routes per expert [moe_layers, experts] summed over all blocks (streams)."""
    counts: np.ndarray | None = None
    for b in blocks:
        m = b.model
        if counts is None:
            counts = np.zeros((m.num_moe_layers, m.num_routed_experts), dtype=np.int64)
        offs = (np.arange(m.num_moe_layers) * m.num_routed_experts)[None, :, None]
        flat = (b.experts.astype(np.int64) + offs).ravel()
        counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
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
            "imbalance_max_over_mean": np.divide(mx, mean, out=np.zeros_like(mean), where=mean > 0),
        }
    )
