"""Expert load statistics: routed-token counts per (MoE layer, expert), without tokens.

SGLang's expert-distribution statistics (``{"logical_count": [layers][experts]}``) are such
counts; the placer uses them directly as activation weights and the generator can be fitted
to them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.errors import InputError
from traces.jsonfile import read_json_file
from traces.model import ModelSpec


@dataclass(frozen=True, eq=False)
class LoadStats:
    """``counts[l, i]``: tokens routed to expert i of the l-th MoE layer of ``model``."""

    model: ModelSpec
    counts: np.ndarray  # float64 [moe_layers, experts]
    source: str = ""

    def __post_init__(self) -> None:
        want = (self.model.num_moe_layers, self.model.num_routed_experts)
        if self.counts.shape != want:
            raise InputError(
                f"{self.source or 'load statistics'}: counts have shape {list(self.counts.shape)},"
                f" expected [{want[0]} MoE layers, {want[1]} experts]"
            )
        if not np.isfinite(self.counts).all() or (self.counts < 0).any():
            row = int(np.argwhere(~np.isfinite(self.counts) | (self.counts < 0))[0][0])
            raise InputError(
                f"{self.source or 'load statistics'}: MoE layer"
                f" {self.model.moe_layer_indices[row]} has negative, NaN or infinite counts"
            )

    def activation(self) -> np.ndarray:
        """p[l, i] = counts / tokens per layer, rows summing to top_k (the ILPLoad weights)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        if (totals <= 0).any():
            row = int(np.flatnonzero(totals[:, 0] <= 0)[0])
            raise InputError(
                f"{self.source or 'load statistics'}: MoE layer"
                f" {self.model.moe_layer_indices[row]} has no routed tokens"
            )
        return self.counts / totals * self.model.top_k


def read_sglang_logical_count(path: str | os.PathLike[str], model: ModelSpec) -> LoadStats:
    """Read SGLang's ``{"logical_count": [transformer layers][experts]}`` JSON.

    Rows are transformer layers (dense layers have zero rows); the MoE rows named by
    ``model.moe_layer_indices`` are kept.
    """
    p = Path(path)
    d = read_json_file(p, "load statistics file")
    if not isinstance(d, dict) or "logical_count" not in d:
        raise InputError(f"{p}: expected a JSON object with key 'logical_count'")
    rows = d["logical_count"]
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{p}: 'logical_count' must be a non-empty list of layers")
    need = max(model.moe_layer_indices) + 1
    if len(rows) < need:
        raise InputError(
            f"{p}: 'logical_count' has {len(rows)} layers but model {model.name!r} needs"
            f" {need} (MoE layers {model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]})"
        )
    out = np.zeros((model.num_moe_layers, model.num_routed_experts))
    for li, layer in enumerate(model.moe_layer_indices):
        row = rows[layer]
        if not isinstance(row, list) or len(row) != model.num_routed_experts:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(
                f"{p}: logical_count[{layer}] has {n} entries, expected"
                f" {model.num_routed_experts} experts"
            )
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)
        try:
            if not numbers:
                raise TypeError
            out[li] = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InputError(
                f"{p}: logical_count[{layer}] holds non-numbers (or numbers too large)"
            ) from None
    return LoadStats(model=model, counts=out, source=str(p))
