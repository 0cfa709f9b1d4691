"""Links that always carry the same load: one simulated link direction can serve them all.

A spraying fat tree has many links whose every (pair, hop, share) entry is the same, with the
same bandwidth and latency; a replay that keeps one state per such class costs no more than
single-path routing.  The entries come from
:meth:`simulator.cluster.multipath.MultipathRoutes.class_entries`.
"""

from __future__ import annotations

import numpy as np


def link_classes(
    entries: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], bandwidth: np.ndarray,
    latency: np.ndarray,
) -> np.ndarray:
    """Class of every directed link: links that carry the same shares of the same pairs at
    the same hop of their routes and have the same bandwidth and latency always hold the same
    state, so a replay can serve one of them for all (a spraying fat tree then costs no more
    than single-path routing).

    Returns the representative (lowest directed id) of each link's class.
    """
    pair, depth, link, share = entries
    pair = pair * (int(depth.max()) + 1 if depth.size else 1) + depth
    n = bandwidth.shape[0]
    rep = np.arange(n, dtype=np.int64)
    if link.size == 0:
        return rep
    order = np.lexsort((pair, link))
    lk, pr, sh = link[order], pair[order], share[order]
    bounds = np.searchsorted(lk, np.arange(n + 1))
    seen: dict[tuple, int] = {}
    for li in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = bounds[li], bounds[li + 1]
        sig = (float(bandwidth[li]), float(latency[li]), pr[lo:hi].tobytes(), sh[lo:hi].tobytes())
        rep[li] = seen.setdefault(sig, li)
    return rep
