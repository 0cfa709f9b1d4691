"""Megatron-Core router replay: recorded ``routing_indices`` [tokens, MoE layers, top_k].

Follows Megatron-Core's ``megatron/core/transformer/moe/router_replay.py`` (main, 2026):
``RouterReplay.get_recorded_data()`` returns one [tokens, top_k] tensor per MoE layer (in the
order the routers were built), and the CUDA-graph static buffer holds them as
[tokens, MoE layers, top_k].  Users save one of these per step with ``torch.save`` (or
``numpy.save``); accepted per file:

- a tensor/array [tokens, MoE layers, top_k];
- a list of per-layer [tokens, top_k] tensors (``get_recorded_data()``);
- a dict with key ``routing_indices`` holding either of the above (what the exporter writes).

A folder is read in natural name order, one file per step (step = file number); a file name
containing ``rank<N>`` gives the tokens origin GPU N.  Each file is one sequence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from traces.importers.common import BlockBuilder, check_routes
from traces.importers.torchfile import load_torch_file, save_torch_file, tensor, to_array
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta

RANK = re.compile(r"rank(\d+)")
SUFFIXES = (".pt", ".pth", ".npy")


def _natural_key(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def replay_files(source: Path) -> list[Path]:
    if not source.exists():
        raise InputError(f"{source}: input not found")
    if source.is_dir():
        files = sorted((f for f in source.iterdir() if f.suffix in SUFFIXES), key=_natural_key)
        if not files:
            raise InputError(f"{source}: folder holds no .pt, .pth or .npy files")
        return files
    if source.suffix not in SUFFIXES:
        raise InputError(f"{source}: expected a .pt, .pth or .npy file or a folder of them")
    return [source]


def routing_indices(obj: Any, model: ModelSpec, where: str) -> np.ndarray:
    """The [tokens, MoE layers, top_k] array a replay file holds."""
    if isinstance(obj, dict):
        if "routing_indices" not in obj:
            raise InputError(f"{where}: dict without key 'routing_indices'")
        obj = obj["routing_indices"]
    if isinstance(obj, (list, tuple)):
        layers = [to_array(x, f"{where}: layer {i}") for i, x in enumerate(obj)]
        if len(layers) != model.num_moe_layers:
            raise InputError(
                f"{where}: {len(layers)} per-layer tensors, model {model.name!r} has"
                f" {model.num_moe_layers} MoE layers"
            )
        if len({a.shape for a in layers}) != 1 or layers[0].ndim != 2:
            raise InputError(f"{where}: per-layer tensors must all be [tokens, top_k]")
        arr = np.stack(layers, axis=1)
    else:
        arr = to_array(obj, where)
    if arr.ndim != 3 or arr.shape[1:] != (model.num_moe_layers, model.top_k):
        raise InputError(
            f"{where}: routing_indices of shape {list(arr.shape)}, expected [tokens,"
            f" {model.num_moe_layers} MoE layers, top_k={model.top_k}] for {model.name!r}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{where}: routing_indices must be integers, got {arr.dtype}")
    return arr.astype(np.int64)


def iter_megatron(
    source: str | Path, model: ModelSpec, chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS
) -> Iterator[RoutingTrace]:
    source = Path(source)
    files = replay_files(source)
    ranks = [RANK.search(f.name) for f in files]
    meta = TraceMeta(
        model=model,
        source=f"Megatron-Core router replay {source}",
        produced_by="moe-netsim trace import --format megatron",
    )
    builder = BlockBuilder(meta, chunk_tokens)
    for step, (f, rank) in enumerate(zip(files, ranks, strict=True)):
        if f.suffix == ".npy":
            try:
                obj: Any = np.load(f, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise InputError(f"{f}: not a readable NumPy array ({exc})") from None
        else:
            obj = load_torch_file(f)
        experts = routing_indices(obj, model, str(f))
        check_routes(experts, model, str(f))
        n = experts.shape[0]
        yield from builder.add(
            experts,
            seq_id=np.full(n, step, dtype=np.int64),
            position=np.arange(n, dtype=np.int32),
            origin_gpu=None
            if not any(ranks)
            else np.full(n, int(rank.group(1)) if rank else 0, np.int32),
            step=np.full(n, step, dtype=np.int32),
        )
    yield from builder.finish()


def write_megatron(blocks: Iterator[RoutingTrace], folder: Path) -> int:
    """One ``step<S>.pt`` per step (``{"routing_indices": [tokens, layers, k]}``, int64)."""
    per_step: dict[int, list[np.ndarray]] = {}
    count = 0
    for b in blocks:
        step = b.step if b.step is not None else np.zeros(b.num_tokens, np.int32)
        for s in np.unique(step):
            per_step.setdefault(int(s), []).append(b.experts[step == s].astype(np.int64))
        count += b.num_tokens
    if not per_step:
        raise InputError(f"{folder}: the trace holds no tokens; nothing written")
    folder.mkdir(parents=True, exist_ok=True)
    for s, parts in sorted(per_step.items()):
        path = folder / f"step{s}.pt"
        with atomic_output(path) as tmp:
            save_torch_file({"routing_indices": tensor(np.concatenate(parts), str(path))}, tmp)
    return count
