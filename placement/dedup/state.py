"""One MoE layer's de-duplicated cost as a mutable search state with exact deltas.

Tokens are hyperedges over experts.  ``cnt[t, s]`` counts the routes of token t whose expert
copy sits on server s; the layer's cost is sum over (t, s) with cnt > 0 of ``cost[t, s]``
(zero on the token's own server).  Moving or adding one expert copy changes ``cnt`` only for
that expert's tokens, so every delta is exact and costs O(tokens of the expert).
"""

from __future__ import annotations

import numpy as np


def primary_cost(experts: np.ndarray, cost: np.ndarray, servers: np.ndarray) -> float:
    """One layer's cost with every expert on its server ``servers[e]`` (one copy each)."""
    T, k = experts.shape
    used = np.zeros(cost.shape, dtype=bool)
    used[np.repeat(np.arange(T), k), servers[experts].ravel()] = True
    return float((cost * used).sum())


def _sum_by_expert(per_route: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Rows of ``per_route`` [routes grouped by expert, S] summed per expert, [experts, S]."""
    out = np.zeros((len(bounds) - 1, per_route.shape[1]))
    used = bounds[1:] > bounds[:-1]  # experts without routes stay 0 (reduceat would not)
    if used.any():
        out[used] = np.add.reduceat(per_route, bounds[:-1][used], axis=0)
    return out


class LayerState:
    """Single-copy and replicated experts of one layer on servers, with token-server counts."""

    def __init__(
        self,
        experts: np.ndarray,  # [T, k] expert ids of the layer
        cost: np.ndarray,  # [T, S] cost of a remote copy per token and server (0 on its own)
        near: np.ndarray,  # [T, S] distance of the token's origin to each server
        own: np.ndarray,  # [T] the server of the token's origin GPU
        num_experts: int,
        servers: np.ndarray,  # [E] server of every expert's primary copy
    ) -> None:
        T, k = experts.shape
        self.T, self.k, self.E, self.S = T, k, num_experts, cost.shape[1]
        self.cost = cost
        self.near = near
        self.own = own
        flat = experts.reshape(-1).astype(np.int64)
        order = np.argsort(flat, kind="stable")
        self.r_tok = (order // k).astype(np.int64)  # token of each route, grouped by expert
        self.r_exp = flat[order]
        self.order = order  # route i (grouped by expert) is slot order[i] of the [T, k] table
        self.x = flat.reshape(T, k)
        self.bounds = np.searchsorted(self.r_exp, np.arange(num_experts + 1))
        self.occ = np.zeros((T, num_experts), dtype=bool)
        self.occ[self.r_tok, self.r_exp] = True
        # w[e, B] = sum over e's tokens of cost[t, B] (constant: costs never change)
        self.w = _sum_by_expert(cost[self.r_tok], self.bounds)
        self.weight = np.diff(self.bounds)  # routes per expert (its load)
        self.copies: list[list[int]] = [[int(s)] for s in servers]
        self.srv = np.asarray(servers, dtype=np.int64).copy()
        self.h = self.srv[self.r_exp]  # server serving each route
        self.recount()

    def recount(self) -> None:
        self.cnt = np.bincount(
            self.r_tok * self.S + self.h, minlength=self.T * self.S
        ).reshape(self.T, self.S).astype(np.int32)

    def objective(self) -> float:
        return float((self.cost * (self.cnt > 0)).sum())

    def copies_count(self) -> int:
        """Remote servers used, summed over tokens (the de-duplicated remote copies)."""
        used = self.cnt > 0
        return int(used.sum() - used[np.arange(self.T), self.own].sum())

    def server_load(self) -> np.ndarray:
        return np.bincount(self.h, minlength=self.S).astype(np.float64)

    def is_single(self) -> np.ndarray:
        return np.array([len(c) == 1 for c in self.copies])

    # --- moves of single-copy experts -------------------------------------------------------
    def move_deltas(self) -> np.ndarray:
        """delta[e, B]: exact change of the cost when single-copy expert e alone moves to B.

        Over e's tokens: + cost[t, B] where t has no copy on B yet, - cost[t, A] where e is
        t's only expert on its server A.  The first sum is ``w[e, B]`` minus, for every token
        of e, the servers t already uses (at most k per token: O(tokens x k^2), not x servers);
        rows of replicated experts are meaningless.
        """
        T, k, S = self.T, self.k, self.S
        hk = np.empty(T * k, dtype=np.int64)
        hk[self.order] = self.h
        hk = hk.reshape(T, k)
        rows = np.arange(T)[:, None]
        only = np.where(self.cnt[rows, hk] == 1, self.cost[rows, hk], 0.0)
        rem = np.bincount(self.x.ravel(), weights=only.ravel(), minlength=self.E)
        if S <= k:  # few servers: sum cost[t, B] over e's tokens not on B yet, directly
            free = np.where(self.cnt == 0, self.cost, 0.0)[self.r_tok]  # [routes, S]
            return _sum_by_expert(free, self.bounds) - rem[:, None]
        srt = np.sort(hk, axis=1)
        first = np.ones(srt.shape, dtype=bool)
        first[:, 1:] = srt[:, 1:] != srt[:, :-1]
        val = np.where(first, self.cost[rows, srt], 0.0)  # [T, k]: servers t uses, once each
        keys = (self.x[:, :, None] * S + srt[:, None, :]).ravel()  # every (expert, used server)
        vals = np.broadcast_to(val[:, None, :], (T, k, k)).ravel()
        used = np.bincount(keys, weights=vals, minlength=self.E * S).reshape(self.E, S)
        return self.w - used - rem[:, None]

    def _part(self, e: int, src: int, dst: int, tokens: np.ndarray) -> float:
        cnt, c = self.cnt, self.cost
        return float(
            (c[tokens, dst] * (cnt[tokens, dst] == 0)).sum()
            - (c[tokens, src] * (cnt[tokens, src] == 1)).sum()
        )

    def tokens_of(self, e: int) -> np.ndarray:
        return self.r_tok[self.bounds[e]:self.bounds[e + 1]]

    def swap_delta(self, a: int, b: int) -> float:
        """Exact change when single-copy experts a and b exchange servers."""
        A, B = int(self.srv[a]), int(self.srv[b])
        ta, tb = self.tokens_of(a), self.tokens_of(b)
        ta = ta[~self.occ[ta, b]]
        tb = tb[~self.occ[tb, a]]
        return self._part(a, A, B, ta) + self._part(b, B, A, tb)

    def move_delta(self, a: int, dst: int) -> float:
        return self._part(a, int(self.srv[a]), dst, self.tokens_of(a))

    def _shift(self, e: int, dst: int) -> None:
        src = int(self.srv[e])
        lo, hi = self.bounds[e], self.bounds[e + 1]
        t = self.r_tok[lo:hi]  # distinct: a token uses an expert once
        self.cnt[t, src] -= 1
        self.cnt[t, dst] += 1
        self.h[lo:hi] = dst
        self.srv[e] = dst
        self.copies[e] = [dst]

    def apply_swap(self, a: int, b: int) -> None:
        A, B = int(self.srv[a]), int(self.srv[b])
        self._shift(a, B)
        self._shift(b, A)

    def apply_move(self, a: int, dst: int) -> None:
        self._shift(a, dst)

    # --- replicas -----------------------------------------------------------------------------
    def replica_deltas(self) -> np.ndarray:
        """delta[e, s]: exact change when expert e gets one more copy on server s.

        A route switches to the new copy only when s is strictly nearer its origin than the
        copy it uses (ties stay with the lower replica index, as in the simulator).
        """
        t, h = self.r_tok, self.h
        cnt, c = self.cnt, self.cost
        nearer = self.near[t] < self.near[t, h][:, None]
        rem = np.where(cnt[t, h] == 1, c[t, h], 0.0)
        add = np.where(cnt[t] == 0, c[t], 0.0)
        out = _sum_by_expert(np.where(nearer, add - rem[:, None], 0.0), self.bounds)
        for e, cp in enumerate(self.copies):
            out[e, cp] = np.inf
        return out

    def _replica_routes(self, e: int, s: int) -> np.ndarray:
        lo, hi = self.bounds[e], self.bounds[e + 1]
        r = np.arange(lo, hi)
        return r[self.near[self.r_tok[r], s] < self.near[self.r_tok[r], self.h[r]]]

    def replica_delta(self, e: int, s: int) -> float:
        r = self._replica_routes(e, s)
        t, old = self.r_tok[r], self.h[r]
        cnt, c = self.cnt, self.cost
        return float(
            (c[t, s] * (cnt[t, s] == 0)).sum() - (c[t, old] * (cnt[t, old] == 1)).sum()
        )

    def replica_load_shift(self, e: int, s: int) -> np.ndarray:
        """Routes each server gains (s) or loses when e gets a copy on s, [S]."""
        r = self._replica_routes(e, s)
        out = -np.bincount(self.h[r], minlength=self.S).astype(np.float64)
        out[s] += r.size
        return out

    def apply_replica(self, e: int, s: int) -> None:
        r = self._replica_routes(e, s)
        t, old = self.r_tok[r], self.h[r]  # distinct tokens
        self.cnt[t, old] -= 1
        self.cnt[t, s] += 1
        self.h[r] = s
        self.copies[e].append(s)

    def copy_loads(self) -> dict[tuple[int, int], int]:
        """Routes served by each (expert, server) copy."""
        key = self.r_exp * self.S + self.h
        vals = np.bincount(key, minlength=self.E * self.S).reshape(self.E, self.S)
        return {(e, s): int(vals[e, s]) for e, cp in enumerate(self.copies) for s in cp}
