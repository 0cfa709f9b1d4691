"""Frames from a finished replay or count: per link, over time, per phase, per token, summary.

Link classes used for "bytes per tier": ``intra_server`` (both ends a GPU or a server node:
NVLink class), ``leaf`` (a server node to a switch: the access links), ``spine`` (switch to
switch: aggregation, core, Dragonfly local/global links).  The cluster's own tier label
(``LinkSpec.tier``) is kept in the link frames as ``tier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.topology import ClusterSpec
from simulator.traffic_config import SHARED_EXPERTS_NOTE

LINK_CLASSES = ("intra_server", "leaf", "spine")
DEFAULT_WINDOWS = 100


def link_classes(cluster: ClusterSpec) -> list[str]:
    """Class of every link (see module docstring), in link order."""
    kinds = {n.name: n.kind for n in cluster.nodes}
    out = []
    for lk in cluster.links:
        switches = (kinds[lk.a] == "switch") + (kinds[lk.b] == "switch")
        out.append(LINK_CLASSES[switches])
    return out


def network_entry_ids(cluster: ClusterSpec) -> np.ndarray:
    """Directed ids of links from a server node (or GPU) into a switch.

    Every copy that crosses the network passes exactly one of these, so their bytes are the
    bytes put on the network.
    """
    kinds = {n.name: n.kind for n in cluster.nodes}
    out = []
    for i, lk in enumerate(cluster.links):
        if kinds[lk.a] != "switch" and kinds[lk.b] == "switch":
            out.append(2 * i)
        elif kinds[lk.b] != "switch" and kinds[lk.a] == "switch":
            out.append(2 * i + 1)
    return np.array(out, dtype=np.int64)


def link_table(cluster: ClusterSpec) -> pd.DataFrame:
    """One row per link direction: ids, ends, tier, class, weight, bandwidth."""
    classes = link_classes(cluster)
    rows = []
    for i, lk in enumerate(cluster.links):
        for d, (src, dst) in enumerate(((lk.a, lk.b), (lk.b, lk.a))):
            rows.append(
                (2 * i + d, i, src, dst, lk.tier, classes[i], lk.weight, lk.bandwidth_bytes_per_s)
            )
    return pd.DataFrame(
        rows,
        columns=["link_dir", "link", "src", "dst", "tier", "link_class", "weight",
                 "bandwidth_bytes_per_s"],
    )


def tier_bytes(cluster: ClusterSpec, link_bytes: np.ndarray) -> dict[str, float]:
    """Bytes summed over the link directions of each class, plus bytes put on the network."""
    classes = np.repeat(link_classes(cluster), 2)
    out = {f"bytes_{c}": float(link_bytes[classes == c].sum()) for c in LINK_CLASSES}
    out["network_bytes"] = float(link_bytes[network_entry_ids(cluster)].sum())
    out["network_link_bytes"] = out["bytes_leaf"] + out["bytes_spine"]
    return out


def utilisation_windows(
    link_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, num_links: int,
    makespan_s: float, window_s: float | None,
) -> pd.DataFrame:
    """Busy fraction of every link direction in windows of ``window_s`` from time 0 (exact,
    from the logged busy periods; the last window may reach past the makespan)."""
    if makespan_s <= 0:
        return pd.DataFrame(
            {"link_dir": pd.Series(dtype=np.int64), "window": pd.Series(dtype=np.int64),
             "start_s": pd.Series(dtype=float), "end_s": pd.Series(dtype=float),
             "busy_s": pd.Series(dtype=float), "utilisation": pd.Series(dtype=float)}
        )
    w = window_s or makespan_s / DEFAULT_WINDOWS
    nwin = max(1, int(np.ceil(makespan_s / w - 1e-12)))
    edges = np.arange(nwin + 1) * w
    busy_at_edge = np.zeros((num_links, nwin + 1))
    order = np.lexsort((starts, link_ids))
    lid, s, e = link_ids[order], starts[order], ends[order]
    cum = np.concatenate([[0.0], np.cumsum(e - s)])
    bounds = np.searchsorted(lid, np.arange(num_links + 1))
    for li in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = bounds[li], bounds[li + 1]
        # busy time before each edge: full segments that started earlier, minus the overhang
        j = np.searchsorted(s[lo:hi], edges, side="right") + lo  # segments starting <= edge
        last = np.maximum(j - 1, lo)
        over = np.where(j > lo, np.maximum(e[last] - edges, 0.0), 0.0)
        busy_at_edge[li] = cum[j] - cum[lo] - over
    busy = np.diff(busy_at_edge, axis=1)
    return pd.DataFrame(
        {
            "link_dir": np.repeat(np.arange(num_links, dtype=np.int64), nwin),
            "window": np.tile(np.arange(nwin, dtype=np.int64), num_links),
            "start_s": np.tile(edges[:-1], num_links),
            "end_s": np.tile(edges[1:], num_links),
            "busy_s": busy.ravel(),
            "utilisation": (busy / w).ravel(),
        }
    )


def latency_stats(latency_s: np.ndarray) -> dict[str, float]:
    if latency_s.size == 0:
        return {"latency_mean_s": 0.0, "latency_p50_s": 0.0, "latency_p99_s": 0.0}
    return {
        "latency_mean_s": float(latency_s.mean()),
        "latency_p50_s": float(np.percentile(latency_s, 50)),
        "latency_p99_s": float(np.percentile(latency_s, 99)),
    }


@dataclass(frozen=True, eq=False)
class RunRecords:
    """What one replay recorded, as plain values: built by the engine when the run ends.

    Per link direction (in link order, two per link): bytes, chunks, busy and queueing
    seconds; the busy log (one segment per busy period: link direction, start, end); rows
    per (microbatch, layer) and per phase; token frames per micro-batch; per GPU its compute
    busy seconds and routes.
    """

    cluster: ClusterSpec
    makespan_s: float
    link_bytes: np.ndarray
    link_chunks: np.ndarray
    link_busy_s: np.ndarray
    link_queue_sum_s: np.ndarray
    link_queue_max_s: np.ndarray
    busy_link: np.ndarray
    busy_start_s: np.ndarray
    busy_end_s: np.ndarray
    layer_rows: list[tuple[Any, ...]]
    phase_rows: list[tuple[Any, ...]]
    token_parts: list[pd.DataFrame]
    gpu_busy_s: np.ndarray
    gpu_routes: np.ndarray
    hops: float
    tokens: int
    copies: dict[str, float]  # remote copies per token-layer and network bytes, with/without
    utilisation_window_s: float | None
    dispatch: str
    multipath: str
    link_class: np.ndarray  # [link directions] the direction whose record each one shares


@dataclass(frozen=True, eq=False)
class SimFrames:
    """Frames of one replay."""

    links: pd.DataFrame  # per link direction
    layers: pd.DataFrame  # per (microbatch, layer)
    phases: pd.DataFrame  # per (microbatch, layer, phase)
    tokens: pd.DataFrame  # per token
    gpus: pd.DataFrame  # per GPU: routes computed, compute busy time
    utilisation: pd.DataFrame  # per (link direction, time window)
    summary: dict[str, Any]


def _token_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame(
        {"microbatch": pd.Series(dtype=np.int64), "seq_id": pd.Series(dtype=np.int64),
         "position": pd.Series(dtype=np.int32), "origin_gpu": pd.Series(dtype=np.int64),
         "moe_latency_s": pd.Series(dtype=float)}
    )


def collect_sim(rec: RunRecords) -> SimFrames:
    """Build the frames of a finished replay."""
    cluster = rec.cluster
    makespan = rec.makespan_s
    links = link_table(cluster)
    links["bytes"] = rec.link_bytes.astype(np.int64)
    links["chunks"] = rec.link_chunks.astype(np.int64)
    links["busy_s"] = rec.link_busy_s
    links["utilisation"] = links["busy_s"] / makespan if makespan > 0 else 0.0
    chunks = rec.link_chunks
    links["mean_queue_delay_s"] = np.divide(
        rec.link_queue_sum_s, chunks, out=np.zeros(len(chunks)), where=chunks > 0
    )
    links["peak_queue_delay_s"] = rec.link_queue_max_s
    util = utilisation_windows(
        rec.busy_link, rec.busy_start_s, rec.busy_end_s, len(chunks), makespan,
        rec.utilisation_window_s,
    )
    if len(util):  # links that always carry the same load share one record: copy its windows
        for col in ("busy_s", "utilisation"):
            util[col] = util[col].to_numpy().reshape(len(chunks), -1)[rec.link_class].ravel()
    layers = pd.DataFrame(
        rec.layer_rows,
        columns=["microbatch", "layer", "start_s", "dispatch_done_s", "compute_done_s",
                 "finish_s", "duration_s"],
    )
    phases = pd.DataFrame(
        rec.phase_rows, columns=["microbatch", "layer", "phase", "start_s", "finish_s"]
    )
    phases["duration_s"] = phases["finish_s"] - phases["start_s"]
    # rows were appended as layers finished; order them by (microbatch, layer)
    layers = layers.sort_values(["microbatch", "layer"], kind="stable", ignore_index=True)
    phases = phases.sort_values(["microbatch", "layer"], kind="stable", ignore_index=True)
    tokens = _token_frame(rec.token_parts)
    g = len(rec.gpu_busy_s)
    gpus = pd.DataFrame(
        {
            "gpu": np.arange(g, dtype=np.int64),
            "name": list(cluster.gpus),
            "server": cluster.gpu_server,
            "routes": rec.gpu_routes,
            "compute_busy_s": rec.gpu_busy_s,
            "compute_utilisation": rec.gpu_busy_s / makespan if makespan > 0 else np.zeros(g),
        }
    )
    summary: dict[str, Any] = {
        "tokens": float(rec.tokens),
        "microbatches": float(len(rec.token_parts)),
        "hops_per_token": rec.hops / rec.tokens if rec.tokens else 0.0,
        **rec.copies,
        **tier_bytes(cluster, links["bytes"].to_numpy()),
        "max_link_utilisation": float(links["utilisation"].max()) if len(links) else 0.0,
        "max_gpu_compute_utilisation": float(gpus["compute_utilisation"].max()),
        "makespan_s": makespan,
        **latency_stats(tokens["moe_latency_s"].to_numpy(dtype=float)),
        "dispatch": rec.dispatch,
        "multipath": rec.multipath,
        "shared_experts": SHARED_EXPERTS_NOTE,
    }
    return SimFrames(
        links=links, layers=layers, phases=phases, tokens=tokens, gpus=gpus,
        utilisation=util, summary=summary,
    )


def summary_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary dict as a one-row frame (for Parquet)."""
    return pd.DataFrame([summary])
