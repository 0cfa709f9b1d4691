"""Within-token co-activation statistics: pairwise lift, top pairs, distinct blocks per token.

The statistics a synthetic trace must reproduce for de-duplicated dispatch to be judged
honestly (docs/background/synthetic-traces.md):

- pairwise lift ``P(i, j) / (P(i) P(j))`` of the pairs of one layer that are frequent enough
  to measure (expected co-activations under independence ``n P(i) P(j) >= MIN_EXPECTED``),
  pooled over layers: its quantiles, and its rank agreement with another trace pair by pair;
- the overlap of the ``TOP_PAIRS`` highest-lift pairs per layer;
- expected distinct blocks per token under a partition of the experts into blocks (the
  servers of a layout: contiguous blocks, or blocks packed by co-activation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_EXPECTED = 20.0
TOP_PAIRS = 50
LIFT_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


def onehot(ids: np.ndarray, num_experts: int) -> np.ndarray:
    """[n, k] expert ids -> [n, E] 0/1 float32."""
    x = np.zeros((ids.shape[0], num_experts), dtype=np.float32)
    np.put_along_axis(x, ids.astype(np.int64), 1.0, axis=1)
    return x


@dataclass(frozen=True, slots=True, eq=False)
class PairStats:
    """Per layer: activation p [L, E], co-activation P(i, j) [L, E, E] and the token count."""

    p: np.ndarray
    joint: np.ndarray
    num_tokens: int

    @classmethod
    def of(cls, experts: np.ndarray, num_experts: int) -> PairStats:
        n, L, _ = experts.shape
        p = np.empty((L, num_experts))
        joint = np.empty((L, num_experts, num_experts))
        for li in range(L):
            x = onehot(experts[:, li], num_experts)
            p[li] = x.mean(axis=0)
            joint[li] = (x.T @ x) / n
        return cls(p, joint, n)

    def lift(self) -> tuple[np.ndarray, np.ndarray]:
        """(lift [L, E, E], frequent [L, E, E]) on pairs i < j; frequent = measurable."""
        pp = self.p[:, :, None] * self.p[:, None, :]
        lift = np.divide(self.joint, pp, out=np.zeros_like(pp), where=pp > 0)
        E = self.p.shape[1]
        upper = np.triu(np.ones((E, E), dtype=bool), k=1)[None]
        return lift, upper & (pp * self.num_tokens >= MIN_EXPECTED)


def lift_quantiles(stats: PairStats, mask: np.ndarray | None = None) -> np.ndarray:
    """Quantiles ``LIFT_QUANTILES`` of the lift over frequent pairs (or ``mask``), all layers."""
    lift, freq = stats.lift()
    return np.quantile(lift[freq if mask is None else mask], LIFT_QUANTILES)


def lift_rank_correlation(a: PairStats, b: PairStats) -> float:
    """Spearman correlation of the lifts of pairs frequent in both traces (pooled layers)."""
    la, fa = a.lift()
    lb, fb = b.lift()
    both = fa & fb
    ra = _ranks(la[both])
    rb = _ranks(lb[both])
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def top_pair_overlap(a: PairStats, b: PairStats, top: int = TOP_PAIRS) -> float:
    """Mean over layers of |top-lift pairs of a and of b| / top (pairs frequent in both)."""
    la, fa = a.lift()
    lb, fb = b.lift()
    out = []
    for li in range(la.shape[0]):
        both = fa[li] & fb[li]
        n = min(top, int(both.sum()))
        if n == 0:
            continue
        ia = np.argsort(-np.where(both, la[li], -1).ravel())[:n]
        ib = np.argsort(-np.where(both, lb[li], -1).ravel())[:n]
        out.append(len(np.intersect1d(ia, ib)) / n)
    return float(np.mean(out)) if out else 0.0


def distinct_blocks(experts: np.ndarray, block_of: np.ndarray) -> float:
    """Mean over tokens and layers of the distinct blocks their experts fall in.

    ``block_of[l, e]`` is the block (server) of expert e at layer l.
    """
    n, L, k = experts.shape
    b = block_of[np.arange(L)[None, :, None], experts.astype(np.int64)]  # [n, L, k]
    s = np.sort(b, axis=2)
    return float(1 + (s[:, :, 1:] != s[:, :, :-1]).sum(axis=2).mean())


def packed_blocks(stats: PairStats, num_blocks: int, passes: int = 4) -> np.ndarray:
    """Equal-size blocks per layer packing often co-activated experts together.

    Swap local search on the within-block co-activation sum, started from contiguous blocks
    (a cheap stand-in for what a co-activation-aware strategy finds).
    """
    L, E = stats.p.shape
    out = np.empty((L, E), dtype=np.int64)
    for li in range(L):
        co = stats.joint[li].copy()
        np.fill_diagonal(co, 0.0)
        blk = np.arange(E) * num_blocks // E
        for _ in range(passes):
            improved = False
            for i in range(E):
                # gain of swapping i with every j: co-activation i and j gain in each other's block
                to_blk = np.stack([co[:, blk == b].sum(axis=1) for b in range(num_blocks)], 1)
                own = to_blk[np.arange(E), blk]  # [E] each expert's ties to its block
                gain = (
                    to_blk[i, blk] - own[i] + to_blk[np.arange(E), blk[i]] - own - 2 * co[i]
                )
                gain[blk == blk[i]] = 0.0
                j = int(np.argmax(gain))
                if gain[j] > 1e-12:
                    blk[i], blk[j] = blk[j], blk[i]
                    improved = True
            if not improved:
                break
        out[li] = blk
    return out
