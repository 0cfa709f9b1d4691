"""Layouts in the serving engines' own files, both ways.

- TensorRT-LLM ``moe_load_balancer.yaml`` (``examples/wide_ep/ep_load_balancer``, main 2026):
  ``num_slots`` S, ``initial_global_assignments`` {transformer layer: [expert of slot j] * S},
  ``layer_updates_per_iter``.  Slots are dealt to ranks in blocks: slot j lives on rank
  j // (S / ep_size), so S must be a multiple of the cluster's GPUs.  A replica is a second slot
  holding the same expert.
- SGLang ``--init-expert-location`` (``physical_to_logical_map``): see
  :func:`placement.layout_io.to_sglang_map` / :func:`~placement.layout_io.from_sglang_map`.

Every GPU must hold the same number of slots in these formats.  A layout whose GPUs hold
different numbers of copies is padded on export with a second slot of an expert the GPU already
holds (no traffic changes: a token goes to one copy per GPU), and reading merges copies of one
expert on one GPU, so export then import gives back the layout exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from placement.problem import ExpertLayout
from traces.infra.errors import InputError


def _slots_per_gpu(layout: ExpertLayout, fmt: str) -> list[list[list[int]]]:
    """[layer][gpu] -> sorted experts; every GPU must hold at least one expert per layer."""
    eg = layout.expert_gpus
    out = []
    for li in range(eg.shape[0]):
        per_gpu = [
            sorted(int(e) for e in np.nonzero((eg[li] == g).any(axis=1))[0])
            for g in range(layout.num_gpus)
        ]
        empty = [g for g, x in enumerate(per_gpu) if not x]
        if empty:
            raise InputError(
                f"{fmt} export: GPU {empty[0]} holds no expert of MoE layer position {li}; the"
                " format needs the same number of slots on every GPU"
            )
        out.append(per_gpu)
    return out


def to_trtllm_yaml(layout: ExpertLayout, layer_indices: tuple[int, ...]) -> dict[str, Any]:
    """The ``moe_load_balancer.yaml`` object for ``layout`` (static: no online updates)."""
    per_layer = _slots_per_gpu(layout, "TensorRT-LLM")
    n = max(len(x) for per_gpu in per_layer for x in per_gpu)
    assignments = {}
    for layer, per_gpu in zip(layer_indices, per_layer, strict=True):
        assignments[int(layer)] = [e for x in per_gpu for e in x + [x[0]] * (n - len(x))]
    return {
        "num_slots": n * layout.num_gpus,
        "initial_global_assignments": assignments,
        "layer_updates_per_iter": 0,
    }


def from_trtllm_yaml(
    obj: Any, layer_indices: tuple[int, ...], num_experts: int, num_gpus: int, where: str
) -> ExpertLayout:
    """Read a ``moe_load_balancer.yaml`` object into a layout on ``num_gpus`` ranks."""
    if not isinstance(obj, dict):
        raise InputError(
            f"{where}: expected a YAML mapping with num_slots and initial_global_assignments"
        )
    slots = obj.get("num_slots")
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise InputError(f"{where}: num_slots must be a positive integer, got {slots!r}")
    if slots % num_gpus:
        raise InputError(
            f"{where}: num_slots = {slots} is not a multiple of the cluster's {num_gpus} GPUs"
            " (TensorRT-LLM deals slots to ranks in equal blocks)"
        )
    assign = obj.get("initial_global_assignments")
    if not isinstance(assign, dict):
        raise InputError(
            f"{where}: initial_global_assignments is missing (an online-only balancer file"
            " names no layout)"
        )
    keys = {
        int(k) if isinstance(k, (int, str)) and str(k).isdigit() else k: v
        for k, v in assign.items()
    }
    missing = [layer for layer in layer_indices if layer not in keys]
    if missing:
        raise InputError(f"{where}: initial_global_assignments has no MoE layer {missing[0]}")
    extra = sorted(str(k) for k in keys if k not in set(layer_indices))
    if extra:
        raise InputError(f"{where}: initial_global_assignments layer {extra[0]} is not a MoE layer")
    rows: list[np.ndarray] = []
    for layer in layer_indices:
        row = keys[layer]
        if not isinstance(row, list) or len(row) != slots:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"{where}: layer {layer}: {n} slot entries, num_slots says {slots}")
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in row):
            raise InputError(f"{where}: layer {layer}: slot entries must be integers")
        arr = np.asarray(row, dtype=np.int64)
        if arr.min() < 0 or arr.max() >= num_experts:
            raise InputError(f"{where}: layer {layer}: experts outside 0..{num_experts - 1}")
        rows.append(arr)
    layout, lost = ExpertLayout.from_slots(rows, num_experts, num_gpus)
    for layer, e in zip(layer_indices, lost, strict=True):
        if e >= 0:
            raise InputError(f"{where}: layer {layer}: expert {e} has no slot")
    return layout
