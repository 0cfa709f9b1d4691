"""Layouts to and from files: a tidy table (layer, expert, replica, gpu[, server]).

Parquet or CSV by suffix.  ``layer`` holds model layer indices when ``layer_indices`` is given
(the transformer layer number of each MoE layer), otherwise MoE layer positions 0..L-1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from placement.problem import ExpertLayout
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError


def save_layout(
    layout: ExpertLayout,
    path: str | os.PathLike[str],
    gpu_server: np.ndarray | None = None,
    layer_indices: tuple[int, ...] = (),
) -> None:
    p = Path(path)
    df = layout.to_frame(gpu_server, layer_indices)
    with atomic_output(p) as tmp:
        if p.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def layout_from_frame(
    df: pd.DataFrame,
    num_layers: int,
    num_experts: int,
    num_gpus: int,
    layer_indices: tuple[int, ...] = (),
    where: str = "layout",
) -> ExpertLayout:
    for col in ("layer", "expert", "gpu"):
        if col not in df.columns:
            raise InputError(f"{where}: column {col!r} missing")
    if df.empty:
        raise InputError(f"{where}: the layout has no rows; it needs one per (layer, expert)")
    if "replica" not in df.columns:
        df = df.assign(replica=df.groupby(["layer", "expert"]).cumcount())
    for col in ("layer", "expert", "replica", "gpu"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise InputError(f"{where}: column {col!r} must hold integers")
    layer = df["layer"].to_numpy()
    if layer_indices:
        pos = {v: i for i, v in enumerate(layer_indices)}
        bad = [v for v in np.unique(layer) if int(v) not in pos]
        if bad:
            raise InputError(f"{where}: layer {int(bad[0])} is not a MoE layer of the model")
        layer = np.array([pos[int(v)] for v in layer], dtype=np.int64)
    expert = df["expert"].to_numpy()
    replica = df["replica"].to_numpy()
    gpu = df["gpu"].to_numpy()
    for name, arr, hi in (("layer", layer, num_layers), ("expert", expert, num_experts),
                          ("gpu", gpu, num_gpus)):
        if arr.size and (arr.min() < 0 or arr.max() >= hi):
            row = int(np.flatnonzero((arr < 0) | (arr >= hi))[0])
            raise InputError(f"{where}: row {row}: {name} {int(arr[row])} out of range 0..{hi - 1}")
    if replica.size and replica.min() < 0:
        raise InputError(f"{where}: negative replica index")
    if replica.size and replica.max() >= num_gpus:  # replicas sit on distinct GPUs
        row = int(np.argmax(replica >= num_gpus))
        raise InputError(
            f"{where}: row {row}: replica {int(replica[row])} out of range 0..{num_gpus - 1}"
            " (an expert has at most one replica per GPU)"
        )
    reps = int(replica.max()) + 1 if replica.size else 1
    out = np.full((num_layers, num_experts, reps), -1, dtype=np.int64)
    key = (layer * num_experts + expert) * reps + replica
    if np.unique(key).size != key.size:
        raise InputError(f"{where}: a (layer, expert, replica) appears twice")
    out[layer, expert, replica] = gpu
    missing = np.argwhere(out[:, :, 0] < 0)
    if missing.size:
        raise InputError(
            f"{where}: expert {int(missing[0][1])} of MoE layer position {int(missing[0][0])}"
            " has no GPU"
        )
    return ExpertLayout(out, num_gpus)


def load_layout(
    path: str | os.PathLike[str],
    num_layers: int,
    num_experts: int,
    num_gpus: int,
    layer_indices: tuple[int, ...] = (),
) -> ExpertLayout:
    """A layout from the project's table (.parquet/.csv) or an engine's file, by suffix.

    ``.json``: SGLang ``physical_to_logical_map``; ``.yaml``/``.yml``: TensorRT-LLM
    ``moe_load_balancer.yaml``.  Engine files name transformer layers: ``layer_indices`` is
    required for them.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: layout file not found")
    if p.suffix in (".json", ".yaml", ".yml"):
        return _load_engine_layout(p, num_layers, num_experts, num_gpus, layer_indices)
    try:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{p}: cannot read layout ({exc.__class__.__name__}: {exc})") from None
    return layout_from_frame(df, num_layers, num_experts, num_gpus, layer_indices, str(p))


def to_sglang_map(
    layout: ExpertLayout, layer_indices: tuple[int, ...], num_layers: int | None = None
) -> dict[str, list[list[int]]]:
    """SGLang ``--init-expert-location`` JSON: ``{"physical_to_logical_map": [layers][P]}``.

    Physical expert p lives on GPU p // n with n physical experts per GPU (the most copies any
    GPU holds in one layer); one row per transformer layer (``num_layers``, default the last
    MoE layer + 1), dense layers keep the trivial map p -> p mod experts.  A GPU with fewer than
    n copies in a layer pads its slots with a second copy of an expert it already holds (SGLang
    needs every slot filled; :func:`from_sglang_map` merges copies on one GPU).
    """
    eg = layout.expert_gpus
    L, E, _ = eg.shape
    G = layout.num_gpus
    idx = layer_indices or tuple(range(L))
    if len(idx) != L:
        raise InputError(f"sglang export: {len(idx)} layer indices for {L} MoE layers")
    total = num_layers if num_layers is not None else max(idx) + 1
    if total <= max(idx):
        raise InputError(f"sglang export: {total} layers cannot hold MoE layer {max(idx)}")
    per_gpu = [[sorted(int(e) for e in np.nonzero(eg[li] == g)[0]) for g in range(G)]
               for li in range(L)]
    n = max(len(x) for row in per_gpu for x in row)
    rows: list[list[int]] = [[p % E for p in range(n * G)] for _ in range(total)]
    for li, layer in enumerate(idx):
        row: list[int] = []
        for g, experts in enumerate(per_gpu[li]):
            if not experts:
                raise InputError(
                    f"sglang export: GPU {g} holds no expert of MoE layer {layer}; SGLang's map"
                    " needs the same number of physical experts on every GPU"
                )
            row += experts + [experts[0]] * (n - len(experts))
        rows[layer] = row
    return {"physical_to_logical_map": rows}


def from_sglang_map(
    obj: object,
    layer_indices: tuple[int, ...],
    num_experts: int,
    num_gpus: int,
    where: str = "sglang map",
) -> ExpertLayout:
    """Read ``{"physical_to_logical_map": [layers][P]}`` back into a layout (MoE rows only)."""
    if not isinstance(obj, dict) or "physical_to_logical_map" not in obj:
        raise InputError(f"{where}: expected a JSON object with key 'physical_to_logical_map'")
    rows = obj["physical_to_logical_map"]
    if not isinstance(rows, list) or len(rows) <= max(layer_indices):
        raise InputError(
            f"{where}: 'physical_to_logical_map' needs rows for layers 0..{max(layer_indices)}"
        )
    slot_rows: list[np.ndarray] = []
    for layer in layer_indices:
        row = rows[layer]
        if not isinstance(row, list) or not row or len(row) % num_gpus:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(
                f"{where}: row {layer} has {n} physical experts, not a multiple of {num_gpus} GPUs"
            )
        try:
            arr = np.asarray(row, dtype=np.int64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: row {layer} holds non-integers") from None
        if arr.min() < 0 or arr.max() >= num_experts:
            raise InputError(f"{where}: row {layer} names experts outside 0..{num_experts - 1}")
        slot_rows.append(arr)
    layout, lost = ExpertLayout.from_slots(slot_rows, num_experts, num_gpus)
    for layer, e in zip(layer_indices, lost, strict=True):
        if e >= 0:
            raise InputError(f"{where}: row {layer}: expert {e} has no physical copy")
    return layout


def _load_engine_layout(
    p: Path, num_layers: int, num_experts: int, num_gpus: int, layer_indices: tuple[int, ...]
) -> ExpertLayout:
    from placement.engine_layouts import from_trtllm_yaml
    from traces.infra.jsonfile import read_json_file, read_text_file

    idx = layer_indices or tuple(range(num_layers))
    if p.suffix == ".json":
        obj = read_json_file(p, "SGLang layout")
        return from_sglang_map(obj, idx, num_experts, num_gpus, str(p))
    import yaml

    try:
        obj = yaml.safe_load(read_text_file(p, "TensorRT-LLM layout"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_trtllm_yaml(obj, idx, num_experts, num_gpus, str(p))
