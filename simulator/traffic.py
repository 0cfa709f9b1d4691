"""From routing decisions to GPU-to-GPU traffic (pure numpy; shared by engine and analytic).

A *route* is (token, MoE layer, expert).  Its *origin* is the token's GPU: the trace's
``origin_gpu`` where recorded, otherwise the documented rule ``seq_id mod gpus`` (sequences
dealt round-robin to data-parallel attention ranks).  Its *host* is the GPU holding the expert;
with replicas, the replica nearest to the origin (ties: lowest replica index).  Shared experts
sit on every GPU and cause no traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from traces.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """How many bytes a route moves."""

    dispatch_bytes_per_element: float = field(
        default=1.0, metadata={"help": "Bytes per hidden element sent to the expert (FP8: 1)."}
    )
    combine_bytes_per_element: float = field(
        default=2.0, metadata={"help": "Bytes per element sent back (BF16: 2)."}
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "Hidden size; default: the trace's model."}
    )

    def __post_init__(self) -> None:
        for name in ("dispatch_bytes_per_element", "combine_bytes_per_element"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"traffic: {name} must be a positive number, got {v}")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise InputError(f"traffic: hidden_size must be >= 1, got {self.hidden_size}")

    def route_bytes(self, model: ModelSpec) -> tuple[int, int]:
        """(dispatch, combine) bytes of one route, rounded to whole bytes."""
        hidden = self.hidden_size or model.hidden_size
        return (
            int(round(hidden * self.dispatch_bytes_per_element)),
            int(round(hidden * self.combine_bytes_per_element)),
        )


def validate_layout(expert_gpus: np.ndarray, model: ModelSpec, num_gpus: int) -> None:
    """``expert_gpus[l, i, r]``: GPU of replica r of expert i at MoE layer l (-1 = none)."""
    want = (model.num_moe_layers, model.num_routed_experts)
    if expert_gpus.ndim != 3 or expert_gpus.shape[:2] != want:
        raise InputError(
            f"layout has shape {list(expert_gpus.shape)[:2]} (layers, experts) but the trace's"
            f" model {model.name!r} has {want[0]} MoE layers x {want[1]} experts"
        )
    if (expert_gpus[:, :, 0] < 0).any():
        l_, i = np.argwhere(expert_gpus[:, :, 0] < 0)[0]
        raise InputError(f"layout: expert {i} of MoE layer index {l_} has no GPU")
    if expert_gpus.max() >= num_gpus or expert_gpus.min() < -1:
        bad = int(expert_gpus[(expert_gpus >= num_gpus) | (expert_gpus < -1)][0])
        raise InputError(f"layout names GPU {bad}, but the cluster has GPUs 0..{num_gpus - 1}")


def resolve_origins(block: RoutingTrace, num_gpus: int) -> np.ndarray:
    """Origin GPU per token: recorded, or ``seq_id mod num_gpus``."""
    if block.origin_gpu is not None:
        o = block.origin_gpu.astype(np.int64)
        if block.num_tokens and (o.min() < 0 or o.max() >= num_gpus):
            raise InputError(
                f"trace: origin_gpu {int(o[(o < 0) | (o >= num_gpus)][0])} is outside the"
                f" cluster's GPUs 0..{num_gpus - 1}"
            )
        return o
    return block.seq_id.astype(np.int64) % num_gpus


def resolve_hosts(
    experts: np.ndarray, origins: np.ndarray, expert_gpus: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """Host GPU of every route, [tokens, layers, k]: the nearest replica to the origin."""
    layers = np.arange(experts.shape[1])[None, :, None]
    cand = expert_gpus[layers, experts.astype(np.int64)]  # [T, L, k, R]
    if cand.shape[-1] == 1:
        return cand[..., 0].astype(np.int64)
    d = distance[origins[:, None, None, None], np.maximum(cand, 0)]
    d = np.where(cand < 0, np.inf, d)
    best = np.argmin(d, axis=-1)
    return np.take_along_axis(cand, best[..., None], axis=-1)[..., 0].astype(np.int64)


def pair_counts(origins: np.ndarray, hosts_layer: np.ndarray, num_gpus: int) -> np.ndarray:
    """Routes per (origin, host) for one layer: int64 [gpus, gpus]."""
    flat = (origins[:, None] * num_gpus + hosts_layer).ravel()
    return np.bincount(flat, minlength=num_gpus * num_gpus).reshape(num_gpus, num_gpus)
