"""Latent routing modes: the generator's model of which experts a token chooses together.

A token at a MoE layer first picks a mode ``c`` with probability ``w[c]``, then draws its
``top_k`` experts with the mode's activation ``act[c]`` (each row sums to top_k).  The
mixture ``sum_c w[c] act[c]`` equals the layer's activation exactly, so modes change which
experts go together (pairwise lift ``P(i, j) / (P(i) P(j))``, groups chosen together) but never
the per-expert load.  Two sources of modes:

- ``fit_modes(trace)``: a mixture of independent Bernoullis fitted to a real trace by EM, one
  layer at a time (smoothed by ``SMOOTHING_TOKENS`` pseudo-tokens of the layer's activation,
  which keeps the mixture exact).
- ``parametric_modes(pi)``: modes tilting the activation by log-normal factors of sd
  ``sigma`` (made exact by Sinkhorn scaling), for models without a real per-token trace.

Modes are drawn independently per layer (co-activation across layers is ``layer_corr``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace

SMOOTHING_TOKENS = 0.5  # pseudo-tokens of the layer's activation added to every fitted mode
FIT_MAX_TOKENS = 65_536  # tokens used by the fit (evenly spaced through the trace)
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-5  # stop when the mean log-likelihood per token gains less


@dataclass(frozen=True, slots=True, eq=False)
class ModeTable:
    """Mode weights [layers, K] and activations [layers, K, experts] (rows sum to top_k)."""

    model: ModelSpec
    weights: np.ndarray
    activation: np.ndarray
    source: str = ""
    tokens: int = 0

    def __post_init__(self) -> None:
        m = self.model
        L, E = m.num_moe_layers, m.num_routed_experts
        if self.weights.ndim != 2 or self.weights.shape[0] != L:
            raise InputError(f"{self.source or 'mode table'}: weights must be [{L}, modes]")
        if self.activation.shape != (L, self.weights.shape[1], E):
            raise InputError(
                f"{self.source or 'mode table'}: activation must be [{L}, modes, {E}]"
            )

    @property
    def num_modes(self) -> int:
        return int(self.weights.shape[1])

    def marginals(self) -> np.ndarray:
        """The layer activation [layers, experts] the modes mix to (rows sum to top_k)."""
        return np.einsum("lc,lce->le", self.weights, self.activation)


def _subsample(blocks: Iterable[RoutingTrace], total: int, max_tokens: int) -> np.ndarray:
    stride = max(1, -(-total // max_tokens))
    parts, seen = [], 0
    for b in blocks:
        first = (-seen) % stride
        parts.append(b.experts[first::stride])
        seen += b.num_tokens
    if not parts or not sum(len(p) for p in parts):
        raise InputError("fit: the trace has no tokens")
    return np.concatenate(parts).astype(np.int64)


def _em_layer(ids: np.ndarray, num_experts: int, k_modes: int, rng: np.random.Generator):
    """EM for a mixture of independent Bernoullis on one layer's expert sets [n, top_k]."""
    n, k = ids.shape
    pi = np.bincount(ids.ravel(), minlength=num_experts) / n
    hits_of = _hit_counter(ids, num_experts, k_modes)
    seeds = rng.choice(n, size=k_modes, replace=n < k_modes)
    theta = np.tile(0.5 * pi, (k_modes, 1))
    for c, t in enumerate(seeds):
        theta[c, ids[t]] += 0.5
    resp = np.full((n, k_modes), 1.0 / k_modes)
    w = np.full(k_modes, 1.0 / k_modes)
    last = -np.inf
    for _ in range(EM_ITERATIONS):
        th = np.clip(theta, 1e-6, 1 - 1e-6)
        logit = np.log(th) - np.log1p(-th)  # [K, E]
        ll = logit.T[ids].sum(axis=1) + np.log1p(-th).sum(axis=1) + np.log(w)  # [n, K]
        top = ll.max(axis=1, keepdims=True)
        resp = np.exp(ll - top)
        total = resp.sum(axis=1, keepdims=True)
        resp /= total
        loglik = float((np.log(total) + top).mean())
        if loglik - last < EM_TOLERANCE:
            break
        last = loglik
        mass = resp.sum(axis=0)
        hits = hits_of(resp)
        theta = (hits + SMOOTHING_TOKENS * pi) / (mass + SMOOTHING_TOKENS)[:, None]
        w = mass / n
    mass = resp.sum(axis=0)
    hits = hits_of(resp)
    weights = (mass + SMOOTHING_TOKENS) / (n + k_modes * SMOOTHING_TOKENS)
    act = (hits + SMOOTHING_TOKENS * pi) / (mass + SMOOTHING_TOKENS)[:, None]
    return weights, act


def _hit_counter(ids: np.ndarray, num_experts: int, num_modes: int):
    """hits(resp)[c, e] = sum of resp[t, c] over the tokens t that chose e (one bincount; small
    matrix products thrash multi-threaded BLAS on a busy machine)."""
    n, k = ids.shape
    keys = (ids[:, :, None] * num_modes + np.arange(num_modes)).ravel()

    def hits(resp: np.ndarray) -> np.ndarray:
        w = np.broadcast_to(resp[:, None, :], (n, k, num_modes)).ravel()
        return np.bincount(keys, weights=w, minlength=num_experts * num_modes).reshape(
            num_experts, num_modes
        ).T

    return hits


def fit_modes(
    blocks: Iterable[RoutingTrace],
    num_tokens: int,
    num_modes: int,
    seed: int = 0,
    source: str = "",
    max_tokens: int = FIT_MAX_TOKENS,
) -> ModeTable:
    """Fit ``num_modes`` routing modes per MoE layer to a trace (at most ``max_tokens`` of it).

    ``num_tokens`` is the trace's length (read_trace_meta), used to space the sample evenly.
    """
    if not 1 <= num_modes <= 256:
        raise InputError(f"fit: modes must be in 1..256, got {num_modes}")
    blocks = iter(blocks)
    first = next(blocks, None)
    if first is None:
        raise InputError(f"{source or 'fit'}: the trace has no tokens")
    m = first.model
    ids = _subsample([first, *blocks], num_tokens, max_tokens)
    L, E = m.num_moe_layers, m.num_routed_experts
    weights = np.empty((L, num_modes))
    act = np.empty((L, num_modes, E))
    for li in range(L):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, li]))
        weights[li], act[li] = _em_layer(ids[:, li], E, num_modes, rng)
    return ModeTable(m, weights, act, source=source, tokens=len(ids))


def parametric_modes(pi: np.ndarray, num_modes: int, sigma: float, seed: list[int], cap: float):
    """Modes tilting ``pi`` [layers, E] by log-normal factors: (weights, activation).

    ``act[c, i] ~ pi[i] x[c, i]`` with ``x`` log-normal of sd ``sigma``, fitted by capped
    iterative proportional fitting so that the modes (equal weights) mix to ``pi``, every mode
    sums to top_k and no entry exceeds ``cap``; a last tilt (``exact_mixture``) removes the
    remaining error.
    """
    L, E = pi.shape
    k = pi.sum(axis=1, keepdims=True)[:, :, None]  # [L, 1, 1]
    rng = np.random.default_rng(np.random.SeedSequence([*seed, 8]))
    act = pi[:, None, :] * np.exp(sigma * rng.standard_normal((L, num_modes, E)))
    for _ in range(200):
        mix = act.mean(axis=1, keepdims=True)
        act *= np.divide(pi[:, None, :], mix, out=np.zeros_like(mix), where=mix > 0)
        for _ in range(8):  # rows to top_k, entries at most cap (and not vanishing)
            act = np.clip(act, 1e-9 * pi[:, None, :], cap)
            free = act < cap
            short = k - act.sum(axis=2, keepdims=True)
            room = np.where(free, act, 0.0).sum(axis=2, keepdims=True)
            act = np.where(free, act * (1 + short / np.where(room > 0, room, 1.0)), act)
        if np.abs(act.mean(axis=1) - pi).max() < 1e-9:
            break
    return exact_mixture(np.full((L, num_modes), 1.0 / num_modes), act, pi)


def exact_mixture(weights: np.ndarray, act: np.ndarray, pi: np.ndarray):
    """Tilt every mode by pi / mixture per expert, renormalise to top_k and reweight the modes
    by the same factor: the result mixes to ``pi`` exactly."""
    k = pi.sum(axis=1)[:, None, None]
    mix = np.einsum("lc,lce->le", weights, act)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(mix > 0, pi / np.where(mix > 0, mix, 1.0), 0.0)[:, None, :]
    s = (act * r).sum(axis=2, keepdims=True)  # [L, K, 1]
    dead = s <= 0
    tilted = np.where(dead, pi[:, None, :], k * act * r / np.where(dead, 1.0, s))
    w = weights * np.where(dead[:, :, 0], 0.0, s[:, :, 0] / k[:, :, 0])
    return w / w.sum(axis=1, keepdims=True), tilted


def shrink_to_cap(act: np.ndarray, pi: np.ndarray, cap: float) -> np.ndarray:
    """The smallest contrast shrink ``a`` per layer so that ``(1-a) act + a pi <= cap``.

    Blending every mode toward ``pi`` by the same ``a`` keeps any mixture exact.
    """
    over = act > cap
    need = np.zeros(act.shape)
    gap = act - pi[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        need[over] = (act[over] - cap) / gap[over]
    if np.any(np.broadcast_to(pi[:, None, :], act.shape)[over] >= cap):
        raise InputError(f"synthetic trace: an expert's activation exceeds the cap {cap}")
    return np.clip(need.max(axis=(1, 2)), 0.0, 1.0)


def fit_modes_file(path, num_modes: int, seed: int = 0) -> ModeTable:
    """``fit_modes`` of a native trace file (streamed; at most ``FIT_MAX_TOKENS`` tokens); the
    commands default ``num_modes`` to ``traces.synthetic.config.FIT_DEFAULT_MODES``."""
    from traces.io import iter_trace, read_trace_meta

    _, n = read_trace_meta(path)
    return fit_modes(iter_trace(path), n, num_modes, seed=seed, source=str(path))
