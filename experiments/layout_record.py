"""Which cluster a layout was made for: recorded by ``place`` beside the layout, checked by the
commands that replay it.

``place --out L.parquet`` writes ``L.parquet.meta.json`` with :func:`layout_record` (the
cluster's fingerprint, :func:`simulator.cluster.io.cluster_fingerprint`, its description and
GPU count); a layout table also holds each GPU's server.  :func:`foreign_layout_warning` reads
both and returns one warning line when they describe another cluster than the one given now:
the layout is still valid on it (every GPU exists), but it was optimised for other distances.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from simulator.cluster.io import cluster_fingerprint
from simulator.cluster.topology import ClusterSpec

META_SUFFIX = ".meta.json"


def layout_record(cluster: ClusterSpec) -> dict[str, Any]:
    """The keys of a layout's meta.json that name the cluster it was made for."""
    return {
        "cluster": cluster.description or cluster.name,
        "cluster_fingerprint": cluster_fingerprint(cluster),
        "num_gpus": cluster.num_gpus,
    }


def _recorded(layout: Path) -> dict[str, Any] | None:
    meta = layout.with_name(layout.name + META_SUFFIX)
    try:
        d = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None  # no record (an engine file, a hand-written table): nothing to compare
    return d if isinstance(d, dict) and "cluster_fingerprint" in d else None


def _server_column_differs(layout: Path, cluster: ClusterSpec) -> bool:
    """A layout table whose ``server`` column puts some GPU on another server than the
    cluster does."""
    if layout.suffix not in (".parquet", ".csv"):
        return False
    import pandas as pd

    try:
        df = (pd.read_csv(layout, usecols=["gpu", "server"]) if layout.suffix == ".csv"
              else pd.read_parquet(layout, columns=["gpu", "server"]))
    except (OSError, ValueError, KeyError, ImportError):  # no server column: nothing to compare
        return False
    gpu = df["gpu"].to_numpy()
    if gpu.size == 0 or gpu.min() < 0 or gpu.max() >= cluster.num_gpus:
        return False  # the layout's own check names such a row
    return bool((cluster.gpu_server[gpu] != df["server"].to_numpy(dtype=np.int64)).any())


def foreign_layout_warning(layout: Path, cluster: ClusterSpec, label: str) -> str | None:
    """One warning line when ``layout`` was made for another cluster than ``cluster``."""
    rec = _recorded(layout)
    here = cluster_fingerprint(cluster)
    if rec is not None and rec["cluster_fingerprint"] != here:
        return (
            f"warning: layout {layout} was made for another cluster ({rec.get('cluster')},"
            f" {rec.get('num_gpus')} GPUs, fingerprint {rec['cluster_fingerprint']}) than"
            f" {label} ({cluster.description or cluster.name}, {cluster.num_gpus} GPUs,"
            f" fingerprint {here}); it is replayed as given, though placed for other distances"
        )
    if rec is None and _server_column_differs(layout, cluster):
        return (
            f"warning: layout {layout} puts GPUs on other servers (its server column) than"
            f" {label} does: it was made for another cluster; it is replayed as given"
        )
    return None
