"""Extra expert copies (EPLB's redundant experts) where they remove the most remote copies.

Greedy on exact deltas: every round computes the change of the layer's cost for one more copy
of every expert on every server with a free replica slot, then adds, cheapest first, each copy
whose exact delta (recomputed on the current state) is not positive and that keeps the servers
within their load caps; one copy per expert per round.  A route uses the new copy only when it
is strictly nearer the token's origin (the simulator's nearest-replica rule), so a copy on a
token's own server always serves it and a copy elsewhere can also pull a token onto a server it
did not use (a positive delta, never taken).  Slots no copy improves stay empty.
"""

from __future__ import annotations

import numpy as np

from placement.dedup.deadline import Deadline
from placement.dedup.search import EPS
from placement.dedup.state import LayerState


def add_replicas(
    st: LayerState,
    free_slots: np.ndarray,
    load_cap: np.ndarray | None,
    deadline: Deadline,
    per_round: int = 16,
) -> int:
    """Add copies into ``free_slots`` [servers] (updated in place); copies added."""
    added = 0
    sl = st.server_load()
    while free_slots.sum() > 0 and not deadline.search_passed():
        delta = st.replica_deltas()
        delta[:, free_slots <= 0] = np.inf
        flat = np.flatnonzero(delta.reshape(-1) <= EPS)
        flat = flat[np.argsort(delta.reshape(-1)[flat], kind="stable")]
        touched: set[int] = set()
        round_added = checks = 0
        for f in flat.tolist():
            e, s = divmod(f, st.S)
            if e in touched or free_slots[s] <= 0:
                continue
            checks += 1
            if checks > 4 * per_round:
                break
            if st.replica_delta(e, s) > EPS:
                continue
            shift = st.replica_load_shift(e, s)
            if load_cap is not None:
                new = sl + shift
                if ((new > np.maximum(load_cap, sl) + EPS) & (shift > 0)).any():
                    continue
            st.apply_replica(e, s)
            sl += shift
            free_slots[s] -= 1
            touched.add(e)
            round_added += 1
            if round_added >= per_round:
                break
        added += round_added
        if round_added == 0:
            break
    return added

