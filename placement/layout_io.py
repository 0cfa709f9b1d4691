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
from traces.atomic import atomic_output
from traces.errors import InputError


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
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: layout file not found")
    try:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{p}: cannot read layout ({exc.__class__.__name__}: {exc})") from None
    return layout_from_frame(df, num_layers, num_experts, num_gpus, layer_indices, str(p))
