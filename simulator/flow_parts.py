"""Flow-mode results in parts: what a stretch of micro-batches recorded, and the whole run's
records from its parts taken in order.

With one micro-batch in flight (``inflight_microbatches=1``) a micro-batch starts when the one
before it has finished: every flow has arrived and every GPU has computed, so the network and
the GPUs are idle and nothing of the earlier micro-batch touches it.  Flow mode then replays
each micro-batch on its own from time 0 (:func:`simulator.flow_engine.flow_microbatch`) and
:func:`combine_flow_parts` shifts its times by the makespans before it and adds its counters in
micro-batch order, whether the parts were replayed here or on a Dask cluster
(:mod:`experiments.split_replay`): a split run is identical to a serial one.  With more in
flight micro-batches overlap in simulated time and the run is one part.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from simulator.cluster.paths import RouteTable
from simulator.cluster.share_units import add_units, whole_bytes
from simulator.config import SimConfig
from simulator.summaries import DEFAULT_WINDOWS, RunRecords, SimFrames, collect_sim
from simulator.traffic import CopyTally

# the time columns of the layer and phase rows (simulator.layer_traffic.LayerTimes)
LAYER_TIME_COLUMNS = (2, 3, 4, 5)
PHASE_TIME_COLUMNS = (3, 4)


@dataclass(frozen=True, eq=False)
class FlowPart:
    """What micro-batches ``microbatch .. microbatch + count - 1`` recorded, times from their
    start.

    Per link direction (class representatives): bytes in units of the share denominator
    (``link_units``) and as floats, chunks, slowdown sums and maxima; the loads recorded over
    time (link, time, fraction of capacity; the last one of every link back to 0 at
    ``makespan_s``); the layer and phase rows, token frames, per GPU compute seconds and
    routes, hops and copies.
    """

    microbatch: int  # the first
    count: int
    tokens: int
    makespan_s: float
    link_units: np.ndarray
    link_bytes: np.ndarray
    link_chunks: np.ndarray
    queue_sum_s: np.ndarray
    queue_max_s: np.ndarray
    load_link: np.ndarray
    load_time: np.ndarray
    load_frac: np.ndarray
    layer_rows: list[tuple]
    phase_rows: list[tuple]
    token_parts: list[pd.DataFrame]
    gpu_busy_s: np.ndarray
    gpu_routes: np.ndarray
    hops: float
    copies: CopyTally


def _shifted(rows: list[tuple], columns: tuple[int, ...], offset_s: float) -> list[tuple]:
    if offset_s == 0.0:
        return rows
    return [tuple(v + offset_s if i in columns else v for i, v in enumerate(r)) for r in rows]


def busy_segments(
    link: np.ndarray, t: np.ndarray, f: np.ndarray, makespan_s: float, window_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recorded loads (link, from time, fraction) as busy segments (link, start, end) that give
    every window of ``window_s`` from 0 exactly its busy time: a stretch at load f from a to b
    (cut at the window edges) becomes the segment [a, a + f (b - a)]."""
    if link.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    order = np.lexsort((t, link))
    link, t, f = link[order], t[order], f[order]
    nxt = np.r_[t[1:], makespan_s]
    last_of_link = np.r_[link[1:] != link[:-1], True]
    nxt[last_of_link] = makespan_s
    keep = (f > 0) & (nxt > t)
    link, a, b, f = link[keep], t[keep], nxt[keep], f[keep]
    first_w = np.floor(a / window_s).astype(np.int64)
    last_w = np.maximum(np.ceil(b / window_s).astype(np.int64) - 1, first_w)
    pieces = last_w - first_w + 1
    idx = np.repeat(np.arange(a.size), pieces)
    w = np.repeat(first_w, pieces) + (
        np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    )
    lo = np.maximum(a[idx], w * window_s)
    hi = np.minimum(b[idx], (w + 1) * window_s)
    ok = hi > lo
    lo, hi, idx = lo[ok], hi[ok], idx[ok]
    return link[idx], lo, lo + f[idx] * (hi - lo)


def combine_flow_parts(
    parts: Iterable[FlowPart], routes: RouteTable, config: SimConfig,
    link_class: np.ndarray, denominator: int | None,
) -> SimFrames:
    """The whole replay's frames from its parts in micro-batch order (module docstring):
    each part's times shifted by the makespans before it, its counters added in order."""
    n = link_class.shape[0]
    units = np.zeros(n, dtype=np.int64 if denominator else np.float64)
    link_bytes, chunks = np.zeros(n), np.zeros(n)
    queue_sum, queue_max = np.zeros(n), np.zeros(n)
    load_link: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    load_time: list[np.ndarray] = [np.zeros(0)]
    load_frac: list[np.ndarray] = [np.zeros(0)]
    layer_rows: list[tuple] = []
    phase_rows: list[tuple] = []
    token_parts: list[pd.DataFrame] = []
    g = routes.num_gpus
    gpu_busy, gpu_routes = np.zeros(g), np.zeros(g, dtype=np.int64)
    hops, tokens, offset = 0.0, 0, 0.0
    copies = CopyTally()
    due = 0
    for part in parts:
        if part.microbatch != due:
            raise ValueError(f"flow part of micro-batch {part.microbatch} where {due} was due")
        due += part.count
        units = add_units(units, part.link_units)
        link_bytes += part.link_bytes
        chunks += part.link_chunks
        queue_sum += part.queue_sum_s
        np.maximum(queue_max, part.queue_max_s, out=queue_max)
        load_link.append(part.load_link)
        load_time.append(part.load_time + offset)
        load_frac.append(part.load_frac)
        layer_rows += _shifted(part.layer_rows, LAYER_TIME_COLUMNS, offset)
        phase_rows += _shifted(part.phase_rows, PHASE_TIME_COLUMNS, offset)
        token_parts += part.token_parts
        gpu_busy += part.gpu_busy_s
        gpu_routes += part.gpu_routes
        hops += part.hops
        tokens += part.tokens
        copies.merge(part.copies)
        offset += part.makespan_s
    window = config.utilisation_window_s or (offset / DEFAULT_WINDOWS or 1.0)
    busy_link, busy_start, busy_end = busy_segments(
        np.concatenate(load_link), np.concatenate(load_time), np.concatenate(load_frac),
        offset, window)
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in routes.cluster.links], 2)
    traffic = config.traffic
    cls = link_class
    rec = RunRecords(
        cluster=routes.cluster, makespan_s=offset,
        link_bytes=whole_bytes(units, denominator)[cls].astype(np.float64),
        link_chunks=chunks[cls], link_busy_s=(link_bytes / bandwidth)[cls],
        link_queue_sum_s=queue_sum[cls], link_queue_max_s=queue_max[cls],
        busy_link=busy_link, busy_start_s=busy_start, busy_end_s=busy_end,
        layer_rows=layer_rows, phase_rows=phase_rows, token_parts=token_parts,
        gpu_busy_s=gpu_busy, gpu_routes=gpu_routes, hops=hops, tokens=tokens,
        copies=copies.summary(), utilisation_window_s=config.utilisation_window_s,
        dispatch=traffic.dispatch, multipath=traffic.multipath, link_class=cls,
    )
    return collect_sim(rec)


def frame_fields(frames: SimFrames) -> dict[str, Any]:
    """The frames as keyword arguments (for :class:`simulator.engine.SimResult`)."""
    return {f.name: getattr(frames, f.name) for f in fields(SimFrames)}
