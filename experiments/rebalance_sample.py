"""The per-token sample a rebalancing window keeps for the strategies fitted on co-activation
(``dedup``, ``dedup-bytes``): a uniform sample, without replacement, of the last W steps' tokens.

Every token gets a random key as it streams by (uniform on [0, 1), seeded); a chunk of steps
keeps only its ``size`` tokens with the smallest keys, and the window's sample is the ``size``
smallest keys over its chunks.  The ``size`` smallest keys of a set of i.i.d. keys are a uniform
random subset of its tokens (bottom-k sampling), and they are always among the ``size`` smallest
of their own chunk, so keeping each chunk's is exact.  Memory: at most ``size`` tokens (their
experts per layer and origin GPU) per chunk of gcd(interval, window) steps in the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from placement.token_sample import TokenSample
from traces.origins import resolve_origins
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class _Kept:
    keys: np.ndarray  # [n] float64
    experts: np.ndarray  # [n, layers, top_k]
    origins: np.ndarray  # [n] int64

    def bottom(self, size: int) -> _Kept:
        if self.keys.size <= size:
            return self
        keep = np.sort(np.argpartition(self.keys, size - 1)[:size])  # stream order kept
        return _Kept(self.keys[keep], self.experts[keep], self.origins[keep])


def _join(parts: list[_Kept]) -> _Kept:
    return _Kept(np.concatenate([p.keys for p in parts]),
                 np.concatenate([p.experts for p in parts]),
                 np.concatenate([p.origins for p in parts]))


class WindowSample:
    """Chunks of the look-back window (closed in step with the activation counts) and the chunk
    being filled; :meth:`sample` is the window's uniform token sample."""

    def __init__(self, size: int, chunks: int, num_gpus: int, seed: int) -> None:
        self.size, self.num_gpus = size, num_gpus
        self.rng = np.random.default_rng(seed)
        self.history: deque[_Kept | None] = deque(maxlen=chunks)
        self.pending: _Kept | None = None

    def add(self, block: RoutingTrace) -> None:
        new = _Kept(self.rng.random(block.num_tokens), block.experts,
                    resolve_origins(block, self.num_gpus).astype(np.int64))
        both = [new] if self.pending is None else [self.pending, new]
        self.pending = _join(both).bottom(self.size)

    def close_chunk(self) -> None:
        """The chunk being filled joins the window (``None``: a chunk without tokens)."""
        self.history.append(self.pending)
        self.pending = None

    def tokens_kept(self) -> int:
        return sum(k.keys.size for k in self.history if k is not None)

    def sample(self) -> TokenSample | None:
        parts = [k for k in self.history if k is not None]
        if not parts:
            return None
        kept = _join(parts).bottom(self.size)
        return TokenSample(kept.experts, kept.origins)
