"""What the serving engines' routing dumps share: layer rows, top-k columns, physical ids.

Engines record routing per *transformer* layer (dense layers included, as empty or zero rows)
or per MoE layer, with a fixed number of top-k columns (SGLang's per-token recorder always
keeps 8), and some in *physical* expert ids (one id per expert copy when experts are
replicated).  These helpers turn such arrays into the native ``[tokens, moe_layers, top_k]``
logical ids, or say precisely why they cannot.
"""

from __future__ import annotations

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec


def num_hidden_layers(model: ModelSpec) -> int:
    """Transformer layers an engine dump covers: up to the last MoE layer (MTP layers excluded).

    DeepSeek-V3/R1: 61 (MoE layers 3..60), DeepSeek-V2-Lite: 27, DeepSeekMoE-16B: 28.
    """
    return max(model.moe_layer_indices) + 1


def moe_rows(arr: np.ndarray, model: ModelSpec, where: str, axis: int = 1) -> np.ndarray:
    """Keep the MoE layers of ``arr`` along ``axis``: it holds MoE layers only, or all layers."""
    n = arr.shape[axis]
    if n == model.num_moe_layers:
        return arr
    if n == num_hidden_layers(model):
        return np.take(arr, list(model.moe_layer_indices), axis=axis)
    raise InputError(
        f"{where}: {n} layers, but model {model.name!r} has {model.num_moe_layers} MoE layers"
        f" ({model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]} of"
        f" {num_hidden_layers(model)}); wrong --model?"
    )


def top_k_columns(arr: np.ndarray, model: ModelSpec, where: str) -> np.ndarray:
    """The first ``top_k`` columns of the last axis; extra columns must be unused (-1)."""
    k = arr.shape[-1]
    if k == model.top_k:
        return arr
    if k > model.top_k and (arr[..., model.top_k :] == -1).all():
        return arr[..., : model.top_k]
    raise InputError(
        f"{where}: {k} experts per token per layer, but model {model.name!r} routes top-"
        f"{model.top_k}; wrong --model?"
    )


def check_physical_map(pmap: np.ndarray, model: ModelSpec, where: str) -> np.ndarray:
    """Validate ``physical_to_logical_map`` [transformer layers, physical experts]."""
    if pmap.ndim != 2 or not np.issubdtype(pmap.dtype, np.integer):
        raise InputError(f"{where}: physical_to_logical_map must be an integer [layers, P] table")
    if pmap.shape[0] != num_hidden_layers(model):
        raise InputError(
            f"{where}: physical_to_logical_map has {pmap.shape[0]} layers; model"
            f" {model.name!r} has {num_hidden_layers(model)}; wrong --model?"
        )
    rows = pmap[list(model.moe_layer_indices)]
    if rows.min() < 0 or rows.max() >= model.num_routed_experts:
        raise InputError(
            f"{where}: physical_to_logical_map names logical experts outside"
            f" 0..{model.num_routed_experts - 1}"
        )
    return pmap.astype(np.int64)


def physical_to_logical(
    ids: np.ndarray, pmap_moe: np.ndarray, where: str, first_token: int = 0
) -> np.ndarray:
    """Map ``ids`` [tokens, moe_layers, k] of physical experts to logical ids.

    ``pmap_moe`` [moe_layers, P] is the map restricted to MoE layers.  An id outside 0..P-1
    (including -1, "no expert") is an error naming the token and layer.
    """
    num_physical = pmap_moe.shape[1]
    bad = (ids < 0) | (ids >= num_physical)
    if bad.any():
        t, li, _ = (int(x) for x in np.argwhere(bad)[0])
        raise InputError(
            f"{where}: token {first_token + t}, MoE layer position {li}: physical expert"
            f" {int(ids[t, li, np.flatnonzero(bad[t, li])[0]])} is outside the recorded map"
            f" (0..{num_physical - 1})"
        )
    layer = np.arange(ids.shape[1])[None, :, None]
    return pmap_moe[layer, ids]
