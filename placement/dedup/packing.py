"""Copies of one server onto its GPUs, for the busiest GPU (``dedup``'s last step).

The de-duplicated cost depends only on which server holds which copy (a token crosses the
network once per remote server; the fan-out inside a server is NVLink), so the GPU inside a
server is free for copies and is chosen for compute balance alone: a cardinality-constrained
number partitioning (every GPU takes exactly its quota of copies).  ``pack_server`` deals the
copies heaviest first to the lightest GPU with room (LPT), then exchanges copies between the
busiest GPU and another one while that lowers the busiest GPU's load strictly; so it never ends
above LPT's busiest GPU, and never moves a copy to another server.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-9


def lpt(loads: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """GPU (index into ``quota``) of every copy: heaviest first to the lightest GPU with room."""
    gpu_load = np.zeros(len(quota))
    room = quota.astype(np.int64).copy()
    out = np.empty(len(loads), dtype=np.int64)
    for i in np.lexsort((np.arange(len(loads)), -loads)).tolist():
        ok = np.flatnonzero(room > 0)
        g = int(ok[np.argmin(gpu_load[ok])])
        out[i] = g
        gpu_load[g] += loads[i]
        room[g] -= 1
    return out


def exchange(loads: np.ndarray, gpu: np.ndarray, num_gpus: int,
             enough: float = -np.inf) -> np.ndarray:
    """``gpu`` improved by pairwise exchanges: each step swaps one copy of the busiest GPU
    with a lighter copy of another GPU, the swap that leaves the pair's larger load smallest,
    as long as that is below the busiest load (every GPU keeps its number of copies), and
    until the busiest load is at most ``enough`` (default: no such stop)."""
    out = gpu.copy()
    gl = np.bincount(out, weights=loads, minlength=num_gpus)
    for _ in range(4 * len(loads) + 1):  # each step lowers the busiest or ties it on fewer GPUs
        h = int(np.argmax(gl))
        top = gl[h]
        if top <= enough + EPS:
            break
        on_h = np.flatnonzero(out == h)
        best: tuple[float, int, int] | None = None
        for g in range(num_gpus):
            on_g = np.flatnonzero(out == g)
            if g == h or on_g.size == 0:
                continue
            d = loads[on_h][:, None] - loads[on_g][None, :]  # load moved from h to g
            new = np.where(d > EPS, np.maximum(top - d, gl[g] + d), np.inf)
            i, j = np.unravel_index(int(np.argmin(new)), new.shape)
            if new[i, j] < top - EPS and (best is None or new[i, j] < best[0] - EPS):
                best = (float(new[i, j]), int(on_h[i]), int(on_g[j]))
        if best is None:
            break
        _, a, b = best
        g = int(out[b])
        out[a], out[b] = g, h
        gl[h] -= loads[a] - loads[b]
        gl[g] += loads[a] - loads[b]
    return out


def pack_server(loads: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """GPU (index into ``quota``) of every copy of one server: LPT, then ``exchange``."""
    loads = np.asarray(loads, dtype=np.float64)
    return exchange(loads, lpt(loads, quota), len(quota))
