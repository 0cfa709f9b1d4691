"""Merge a run directory's finished cells into its tables, with reductions vs. the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.outputs import write_parquet
from experiments.studies.spec import Study
from traces.infra.errors import InputError

DETAIL_FRAMES = ("links", "tokens", "layers", "expert_load", "server_load", "utilisation",
                 "timeline")
METRICS_REDUCED = ("hops_per_token", "remote_copies_per_token_layer", "network_link_bytes",
                   "max_link_utilisation", "latency_p50_ms", "latency_p99_ms", "makespan_ms")



def add_reductions(results: pd.DataFrame, axes: tuple[str, ...], baseline: str) -> pd.DataFrame:
    """``<metric>_reduction_pct`` = 100 (1 - metric / metric of the baseline strategy).

    The baseline row of a cell is the one that agrees on every axis except the strategy's
    (``strategy.*``); NaN where the grid has no such row.
    """
    df = results.copy()
    metrics = [m for m in METRICS_REDUCED if m in df.columns]  # runs from before a metric
    group = [a for a in axes if not a.startswith("strategy") and a in df.columns]
    base = df[df["strategy"] == baseline]
    if group:
        base = base.drop_duplicates(subset=group)
        merged = df[group].merge(base[group + metrics], on=group, how="left",
                                 suffixes=("", "_base"))
    else:
        merged = pd.DataFrame(
            {m: np.repeat(base[m].iloc[0] if len(base) else np.nan, len(df)) for m in metrics}
        )

    def reduction(v: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, 100.0 * (1.0 - v / b), np.where(v == b, 0.0, np.nan))

    for m in metrics:
        b = merged[m].to_numpy(dtype=float)
        df[f"{m}_reduction_pct"] = reduction(df[m].to_numpy(dtype=float), b)
    if "ceiling_hops_per_token" in df:  # the most any layout of the cell could save
        b = merged["hops_per_token"].to_numpy(dtype=float)
        df["hops_ceiling_pct"] = reduction(df["ceiling_hops_per_token"].to_numpy(float), b)
    return df


def merge_run(run_dir: Path, study: Study) -> pd.DataFrame:
    """Concatenate the finished cells in grid order into the run's Parquet tables."""
    cells_dir = run_dir / "cells"
    missing = [c.cell_id for c in study.cells if not (cells_dir / c.cell_id).is_dir()]
    if missing:
        raise RuntimeError(f"cells not finished: {missing[:5]}")
    rows = [pd.read_parquet(cells_dir / c.cell_id / "row.parquet") for c in study.cells]
    results = pd.concat(rows, ignore_index=True)
    results = add_reductions(results, study.axes, study.baseline)
    write_parquet(run_dir / "results.parquet", results)
    for name in DETAIL_FRAMES:
        parts = []
        for c in study.cells:
            f = cells_dir / c.cell_id / f"{name}.parquet"
            if f.is_file():  # cells finished by an older version may lack a frame
                parts.append(pd.read_parquet(f).assign(cell=c.cell_id))
        if parts:
            write_parquet(run_dir / f"{name}.parquet", pd.concat(parts, ignore_index=True))
    return results


def load_results(run_dir: Path) -> pd.DataFrame:
    p = Path(run_dir) / "results.parquet"
    if not p.is_file():
        raise InputError(f"{run_dir}: no results.parquet (not a finished sweep or study run)")
    return pd.read_parquet(p)
