"""Exact-delta swap local search on one layer's de-duplicated cost, under server load caps.

A round computes every single-copy expert's exact move delta to every server, pairs the best
few experts of server A (towards B) with the best few of B (towards A), sorts the pairs by the
sum of their move deltas (a lower bound of the swap delta: tokens holding both experts only
make the swap dearer) and applies, in that order, every swap whose exact delta is negative and
that keeps both servers within their load cap (or no further over it).  Swaps keep every
server's expert count, so capacities hold throughout.
"""

from __future__ import annotations

import numpy as np

from placement.dedup.deadline import Deadline
from placement.dedup.state import LayerState

EPS = 1e-9


def _top_per_pair(delta: np.ndarray, srv: np.ndarray, S: int, m: int) -> np.ndarray:
    """top[A, B, :m]: the m experts of server A with the smallest move delta towards B (-1 pad)."""
    top = np.full((S, S, m), -1, dtype=np.int64)
    starts = np.searchsorted(np.sort(srv), np.arange(S))
    for B in range(S):
        order = np.lexsort((delta[:, B], srv))  # by server, then by delta towards B
        grp = srv[order]
        pos = np.arange(order.size) - starts[grp]  # rank inside its server
        keep = (pos < m) & np.isfinite(delta[order, B]) & (grp != B)
        top[grp[keep], B, pos[keep]] = order[keep]
    return top


def _balance_ok(sl: np.ndarray, cap: np.ndarray | None, A: int, B: int, shift: float) -> bool:
    """Server A loses ``shift`` routes and B gains them: neither ends above its cap (or above
    its current load, when it is over the cap already)."""
    if cap is None:
        return True
    na, nb = sl[A] - shift, sl[B] + shift
    return bool(na <= max(cap[A], sl[A]) + EPS and nb <= max(cap[B], sl[B]) + EPS)


def swap_search(
    st: LayerState,
    movable: np.ndarray,
    load_cap: np.ndarray | None,
    deadline: Deadline,
    checks_per_round: int = 96,
) -> int:
    """Improve ``st`` in place until no improving swap is found or the deadline; swaps made."""
    S = st.S
    if S < 2:
        return 0
    done = 0
    m = 4
    sl = st.server_load()
    w = st.weight.astype(np.float64)
    ia, ib = np.triu_indices(S, 1)
    while not deadline.search_passed():
        delta = st.move_deltas()
        delta[~movable] = np.inf
        delta[np.arange(st.E), st.srv] = np.inf
        top = _top_per_pair(delta, st.srv, S, m)
        a = top[ia, ib]  # [P, m]
        b = top[ib, ia]
        da = np.where(a >= 0, delta[np.maximum(a, 0), ib[:, None]], np.inf)
        db = np.where(b >= 0, delta[np.maximum(b, 0), ia[:, None]], np.inf)
        approx = (da[:, :, None] + db[:, None, :]).reshape(-1)
        pa = np.broadcast_to(a[:, :, None], (len(ia), m, m)).reshape(-1)
        pb = np.broadcast_to(b[:, None, :], (len(ia), m, m)).reshape(-1)
        good = np.flatnonzero(approx < -EPS)
        good = good[np.argsort(approx[good], kind="stable")]
        touched: set[int] = set()
        improved = checks = 0
        for c in good.tolist():
            x, y = int(pa[c]), int(pb[c])
            if x in touched or y in touched:
                continue
            checks += 1
            if checks > checks_per_round or deadline.search_passed():
                break
            A, B = int(st.srv[x]), int(st.srv[y])
            if not _balance_ok(sl, load_cap, A, B, w[x] - w[y]):
                continue
            if st.swap_delta(x, y) < -EPS:
                st.apply_swap(x, y)
                sl[A] += w[y] - w[x]
                sl[B] += w[x] - w[y]
                touched.update((x, y))
                improved += 1
        done += improved
        if improved == 0:
            if m >= 16:
                break
            m *= 4
    return done


def repair_balance(
    st: LayerState, movable: np.ndarray, load_cap: np.ndarray, deadline: Deadline,
    max_swaps: int = 500,
) -> bool:
    """Swap experts out of servers over their load cap, cheapest first; True when all fit
    (False when they cannot, or the searches' time is up first)."""
    w = st.weight.astype(np.float64)
    sl = st.server_load()
    for _ in range(max_swaps):
        over = sl - load_cap
        A = int(np.argmax(over))
        if over[A] <= EPS:
            return True
        if deadline.search_passed():
            return False
        delta = st.move_deltas()
        a_set = np.flatnonzero((st.srv == A) & movable)
        b_set = np.flatnonzero((st.srv != A) & movable)
        if a_set.size == 0 or b_set.size == 0:
            return False
        shift = w[a_set][:, None] - w[b_set][None, :]
        Bs = st.srv[b_set]
        ok = (shift > EPS) & (sl[Bs][None, :] + shift <= load_cap[Bs][None, :] + EPS)
        if not ok.any():
            # no swap fits the target: take the one that lowers A most without overloading B
            ok = (shift > EPS) & (sl[Bs][None, :] + shift < sl[A] - EPS)
            if not ok.any():
                return False
        score = delta[a_set][:, Bs] + delta[b_set, A][None, :]
        score = np.where(ok, score, np.inf)
        i, j = np.unravel_index(int(np.argmin(score)), score.shape)
        x, y = int(a_set[i]), int(b_set[j])
        B = int(st.srv[y])
        st.apply_swap(x, y)
        sl[A] -= shift[i, j]
        sl[B] += shift[i, j]
    return bool((sl <= load_cap + EPS).all())


def perturb_and_search(
    st: LayerState,
    movable: np.ndarray,
    load_cap: np.ndarray | None,
    deadline: Deadline,
    rng: np.random.Generator,
    patience: int = 3,
) -> int:
    """Iterated local search: random swaps, search again, keep the result only if cheaper."""
    best = st.objective()
    kept = 0
    fails = 0
    idx = np.flatnonzero(movable)
    if idx.size < 2:
        return 0
    while fails < patience and not deadline.search_passed():
        saved = st.srv.copy()
        for _ in range(max(2, min(8, idx.size // 16))):
            x, y = rng.choice(idx, 2, replace=False)
            if st.srv[x] != st.srv[y]:
                st.apply_swap(int(x), int(y))
        if load_cap is not None and not repair_balance(st, movable, load_cap, deadline):
            fails += 1
            _restore(st, saved)
            continue
        swap_search(st, movable, load_cap, deadline)
        now = st.objective()
        if now < best - EPS:
            best = now
            kept += 1
            fails = 0
        else:
            fails += 1
            _restore(st, saved)
    return kept


def _restore(st: LayerState, srv: np.ndarray) -> None:
    st.srv = srv.copy()
    st.copies = [[int(s)] if len(c) == 1 else c for s, c in zip(srv, st.copies, strict=True)]
    st.h = st.srv[st.r_exp]
    st.recount()
