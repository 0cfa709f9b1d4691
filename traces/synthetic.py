"""Seeded synthetic routing traces with skewed, DeepSeek-like expert popularity.

How a token's experts are drawn (one MoE layer)
    Every (tenant, layer) has target activation probabilities ``pi[i]`` (rows sum to top_k):
    Zipf-shaped over a random permutation of the experts, or the activation of given load
    statistics (SGLang counts).  A token first picks its expert groups ``S`` (``topk_groups``
    of ``num_expert_groups``, DeepSeek-V3's group-limited routing) from a distribution over all
    group subsets, then ``top_k`` distinct experts inside ``S`` by Sampford's method with
    inclusion probabilities ``q_i = top_k * pi[i] / load(S)``.  Sampford's method draws exactly
    ``top_k`` distinct experts with inclusion probability exactly ``q_i``; the subset
    distribution is fitted (iterative scaling) so that ``sum_{S contains g} P(S) q_i = pi[i]``.
    So the per-layer marginals equal the targets exactly in expectation, with no approximation
    to correct afterwards; only sampling noise remains.

Correlation, keeping those marginals
    With probability ``token_corr`` a token repeats the previous token of its sequence at that
    layer (a stationary Markov chain).  Otherwise, with probability ``layer_corr``, it maps its
    experts of the previous MoE layer through a fixed bijection (group by group and expert by
    expert, matched by popularity rank), which gives each layer pair a sparse transition
    structure; the fresh draws then use ``(pi_l - rho * pi_{l-1} o sigma^-1) / (1 - rho)`` so
    that the mixture still has marginals ``pi_l``.  Where that is infeasible the layer's
    ``rho`` is lowered (recorded in the trace metadata as ``layer_corr_effective``).

Speed
    Draws use alias tables (one uniform per expert), so a 1M-token DeepSeek-R1 trace takes
    seconds, not minutes.  Random streams are drawn per fixed unit of tokens in order, so the
    output depends on the configuration only, never on the chunk size a caller asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import comb

import numpy as np

from traces.infra.errors import InputError
from traces.load_stats import LoadStats
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, expert_dtype

_UNIT_TOKENS = 8192  # random streams are drawn per unit, so output is chunk-size independent
_SEQ_BLOCK = 4096  # tenants of sequences are drawn per block of sequence ids
_MAX_GROUP_SUBSETS = 5000
_Q_MAX = 0.98  # largest conditional inclusion probability a group subset may need


@dataclass(frozen=True, slots=True, eq=False)
class TenantSpec:
    """One workload of a mixture: its share of sequences, its GPUs and its expert popularity."""

    share: float = field(metadata={"help": "Relative share of sequences (normalised)."})
    gpus: tuple[int, ...] = field(
        default=(), metadata={"help": "GPUs serving it; () = an equal contiguous block."}
    )
    zipf_exponent: float | None = field(
        default=None, metadata={"help": "Own Zipf exponent; None = the config's."}
    )
    load_stats: LoadStats | None = field(
        default=None, metadata={"help": "Fit its popularity to these counts instead of Zipf."}
    )
    name: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.share) or self.share <= 0:
            raise InputError(f"tenant {self.name!r}: share must be a positive number")
        if any(g < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise InputError(f"tenant {self.name!r}: GPUs must be distinct and >= 0")
        if self.zipf_exponent is not None and (
            not np.isfinite(self.zipf_exponent) or self.zipf_exponent < 0
        ):
            raise InputError(f"tenant {self.name!r}: zipf_exponent must be finite and >= 0")


@dataclass(frozen=True, slots=True, eq=False)
class SynthConfig:
    """Knobs of the synthetic generator."""

    model: ModelSpec
    num_tokens: int = field(metadata={"help": "Tokens to generate."})
    seq_len: int = field(default=512, metadata={"help": "Tokens per sequence."})
    step_tokens: int = field(default=4096, metadata={"help": "Tokens per step (micro-batch)."})
    num_gpus: int = field(default=8, metadata={"help": "GPUs that sequences are spread over."})
    zipf_exponent: float = field(
        default=0.45,
        metadata={
            "help": "Activation of the r-th hottest expert ~ r^-exponent (0.45: busiest"
            " expert ~7x the mean, like DeepSeek-R1 in SGLang's statistics)."
        },
    )
    seed: int = 0
    token_corr: float = field(
        default=0.0,
        metadata={"help": "Probability that a token repeats its predecessor's experts."},
    )
    layer_corr: float = field(
        default=0.0,
        metadata={"help": "Probability that a layer maps the previous layer's experts."},
    )
    max_activation: float = field(
        default=0.45,
        metadata={"help": "Cap on a Zipf expert's activation probability (real max ~0.43)."},
    )
    load_stats: LoadStats | None = field(
        default=None, metadata={"help": "Fit popularity to these counts instead of Zipf."}
    )
    tenants: tuple[TenantSpec, ...] = field(
        default=(), metadata={"help": "Workload mixture; () = one workload on all GPUs."}
    )

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            raise InputError("synthetic trace: num_tokens must be >= 0")
        if self.seq_len < 1 or self.step_tokens < 1 or self.num_gpus < 1:
            raise InputError("synthetic trace: seq_len, step_tokens and num_gpus must be >= 1")
        if not np.isfinite(self.zipf_exponent) or self.zipf_exponent < 0:
            raise InputError("synthetic trace: zipf_exponent must be a finite number >= 0")
        if self.seed < 0:
            raise InputError(f"synthetic trace: seed must be >= 0, got {self.seed}")
        for name in ("token_corr", "layer_corr"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 <= v < 1):
                raise InputError(f"synthetic trace: {name} must be in [0, 1), got {v}")
        m = self.model
        if not (m.top_k / m.num_routed_experts <= self.max_activation < 1):
            raise InputError(
                f"synthetic trace: max_activation must be in [{m.top_k}/{m.num_routed_experts},"
                f" 1), got {self.max_activation}"
            )
        for t in self.tenants:
            if t.gpus and max(t.gpus) >= self.num_gpus:
                raise InputError(
                    f"tenant {t.name!r}: GPU {max(t.gpus)} out of range 0..{self.num_gpus - 1}"
                )
        if len(self.tenants) > self.num_gpus and any(not t.gpus for t in self.tenants):
            raise InputError("synthetic trace: more tenants than GPUs; give each tenant GPUs")
        for stats in [self.load_stats] + [t.load_stats for t in self.tenants]:
            if stats is not None and _geometry(stats.model) != _geometry(m):
                raise InputError(
                    f"{stats.source or 'load statistics'}: recorded for {stats.model.name!r},"
                    f" whose geometry differs from the trace model {m.name!r}"
                )


def _geometry(m: ModelSpec) -> tuple[int, int, int, int, int]:
    return (m.num_moe_layers, m.num_routed_experts, m.top_k, m.num_expert_groups, m.topk_groups)


# --------------------------------------------------------------------------- popularity


def _waterfill(w: np.ndarray, total: float, cap: float) -> np.ndarray:
    """min(c * w, cap) with c chosen so the entries sum to ``total`` (w >= 0, enough positive)."""
    x = np.zeros_like(w, dtype=np.float64)
    free = w > 0
    budget = total
    for _ in range(w.size + 1):
        x[free] = w[free] * (budget / w[free].sum())
        over = free & (x > cap)
        if not over.any():
            return x
        x[over] = cap
        free &= ~over
        budget = total - x[~free].sum()
        if not free.any() or budget <= 0:
            break
    raise InputError(f"synthetic trace: cannot spread {total} activations with a cap of {cap}")


def _exponent(config: SynthConfig, t: TenantSpec) -> float:
    return config.zipf_exponent if t.zipf_exponent is None else t.zipf_exponent


def _tenants(config: SynthConfig) -> tuple[TenantSpec, ...]:
    if config.tenants:
        return config.tenants
    return (TenantSpec(share=1.0, load_stats=config.load_stats, name="all"),)


def _tenant_gpus(config: SynthConfig) -> list[np.ndarray]:
    """GPUs of every tenant: given, or consecutive blocks in proportion to the shares."""
    tenants = _tenants(config)
    shares = np.array([t.share for t in tenants])
    bounds = np.round(np.cumsum(shares) / shares.sum() * config.num_gpus).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    out = []
    for i, t in enumerate(tenants):
        if t.gpus:
            out.append(np.array(t.gpus, dtype=np.int32))
        elif len(tenants) == 1:
            out.append(np.arange(config.num_gpus, dtype=np.int32))
        else:
            lo = min(starts[i], config.num_gpus - 1)
            hi = max(bounds[i], lo + 1)
            out.append(np.arange(lo, hi, dtype=np.int32))
    return out


def tenant_activation(config: SynthConfig) -> list[np.ndarray]:
    """Target activation probabilities [moe_layers, experts] per tenant (rows sum to top_k)."""
    m = config.model
    out = []
    for ti, t in enumerate(_tenants(config)):
        if t.load_stats is not None:
            out.append(t.load_stats.activation())
            continue
        s = _exponent(config, t)
        # tenant 0 keeps the stream of the single-workload generator
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, *([ti] if ti else [])]))
        ranks = np.arange(1, m.num_routed_experts + 1, dtype=np.float64)
        base = _waterfill(ranks ** (-s), m.top_k, config.max_activation)
        pi = np.empty((m.num_moe_layers, m.num_routed_experts))
        for li in range(m.num_moe_layers):
            pi[li, rng.permutation(m.num_routed_experts)] = base
        out.append(pi)
    return out


def layer_popularity(config: SynthConfig) -> np.ndarray:
    """Expected share of routes per expert [moe_layers, experts] (each row sums to 1).

    The share-weighted mixture over tenants of their activation, divided by top_k.
    """
    tenants = _tenants(config)
    shares = np.array([t.share for t in tenants]) / sum(t.share for t in tenants)
    acts = tenant_activation(config)
    return sum(w * a for w, a in zip(shares, acts, strict=True)) / config.model.top_k


# --------------------------------------------------------------------------- sampling design


def _alias_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables for every row of ``w`` [rows, n] (rows with positive sums)."""
    rows, n = w.shape
    x = w / w.sum(axis=1, keepdims=True) * n
    prob = np.ones((rows, n))
    alias = np.tile(np.arange(n), (rows, 1))
    done = np.zeros((rows, n), dtype=bool)
    r = np.arange(rows)
    for _ in range(n - 1):
        s = np.argmin(np.where(done, np.inf, x), axis=1)
        g = np.argmax(np.where(done, -np.inf, x), axis=1)
        xs = x[r, s]
        prob[r, s] = np.clip(xs, 0.0, 1.0)
        alias[r, s] = g
        x[r, g] -= 1.0 - xs
        done[r, s] = True
    return prob, alias


_UNIT_BITS = 26  # a unit of inclusion probability is 2^26 integer steps
_CELL_BITS = 5  # the inverse lookup has 2^5 cells per unit
_ORDERS = 16  # random expert orders per (layer, group subset) for systematic sampling


@dataclass(frozen=True, slots=True, eq=False)
class _Design:
    """Sampling tables of one tenant for all MoE layers.

    A row is (group subset S, expert order o); it lists the M experts of S in order o with
    integer cumulative inclusion probabilities ``cum`` (k units of 2^26 in total).
    """

    subset_thresh: np.ndarray  # [layers, C] alias acceptance thresholds (x 2^32)
    subset_alias: np.ndarray  # [layers, C]
    packed: np.ndarray  # [layers, C * O * M]: cum[pos + 1] << 16 | expert id at pos
    start: np.ndarray  # [layers, C * O * k * 2^cell_bits] first candidate position per cell
    sigma: np.ndarray  # [layers, experts] layer l-1 expert -> layer l expert (row 0 unused)
    layer_corr: np.ndarray  # [layers] effective layer correlation (0 for layer 0)
    width: int  # M, experts per group subset


def _subsets(m: ModelSpec) -> np.ndarray:
    g, gk = m.num_expert_groups, m.topk_groups
    if comb(g, gk) > _MAX_GROUP_SUBSETS:
        raise InputError(
            f"model {m.name!r}: {comb(g, gk)} expert-group subsets is too many to tabulate"
        )
    return np.array(list(itertools.combinations(range(g), gk)), dtype=np.intp)


def _fit_subsets(
    pi: np.ndarray, m: ModelSpec, subsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P(S) per layer so that sum_{S contains g} P(S) k / load(S) = 1 for every used group.

    Returns (P [layers, C], ok [layers]); ``ok`` is False where no such distribution exists
    with every conditional inclusion probability below ``_Q_MAX``.
    """
    layers, e = pi.shape
    g, k = m.num_expert_groups, m.top_k
    member = np.zeros((len(subsets), g))
    member[np.arange(len(subsets))[:, None], subsets] = 1.0
    grouped = pi.reshape(layers, g, e // g)
    load_g = grouped.sum(axis=2)
    load_s = load_g @ member.T  # [layers, C]
    top = np.einsum("lg,cg->lcg", grouped.max(axis=2), member).max(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        qmax = np.where(load_s > 0, k * top / load_s, np.inf)
    allowed = qmax < _Q_MAX
    used = load_g > 0
    p = allowed / np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    coef = np.where(load_s > 0, k / np.where(load_s > 0, load_s, 1), 0.0)  # [layers, C]
    err = np.full(layers, np.inf)
    checked = err.copy()
    for it in range(20_000):
        cur = (p * coef) @ member  # [layers, G]
        logr = np.where(used, np.log(np.maximum(cur, 1e-30)), 0.0)
        err = np.abs(np.where(used, cur - 1.0, 0.0)).max(axis=1)
        if err.max() < 1e-12:
            break
        if it % 500 == 499:  # stalled layers (no feasible distribution) stop the loop
            if np.all((err < 1e-12) | (err > 0.99 * checked)):
                break
            checked = err.copy()
        p = p * np.exp(np.clip(-0.5 * logr @ member.T, -30.0, 30.0))
        total = p.sum(axis=1, keepdims=True)
        p /= np.where(total > 0, total, 1.0)
    return p, allowed.any(axis=1) & (err < 1e-7)


def _rank_bijection(prev: np.ndarray, cur: np.ndarray, m: ModelSpec) -> np.ndarray:
    """sigma[i]: expert of the current layer taking expert i of the previous layer.

    Groups are matched by load rank, then experts inside matched groups by activation rank.
    """
    g = m.num_expert_groups
    per = m.num_routed_experts // g
    gp = np.argsort(-prev.reshape(g, per).sum(1), kind="stable")
    gc = np.argsort(-cur.reshape(g, per).sum(1), kind="stable")
    sigma = np.empty(m.num_routed_experts, dtype=np.intp)
    for a, b in zip(gp, gc, strict=True):
        ep = a * per + np.argsort(-prev[a * per : (a + 1) * per], kind="stable")
        ec = b * per + np.argsort(-cur[b * per : (b + 1) * per], kind="stable")
        sigma[ep] = ec
    return sigma


def _design(
    pi: np.ndarray, m: ModelSpec, layer_corr: float, where: str, seed: list[int]
) -> _Design:
    layers, e = pi.shape
    k = m.top_k
    grouped_routing = m.num_expert_groups > 1 and m.topk_groups < m.num_expert_groups
    gm = m if grouped_routing else ModelSpec(m.name, (0,), e, 0, k, 1)  # one group of all
    subsets = _subsets(gm)
    per = e // gm.num_expert_groups
    members = (subsets[:, :, None] * per + np.arange(per)[None, None, :]).reshape(len(subsets), -1)

    sigma = np.tile(np.arange(e), (layers, 1))
    shifted = np.zeros_like(pi)  # pi_{l-1} carried to layer l's experts by sigma
    for li in range(1, layers):
        sigma[li] = _rank_bijection(pi[li - 1], pi[li], gm)
        shifted[li, sigma[li]] = pi[li - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(shifted > 0, pi / np.where(shifted > 0, shifted, 1), np.inf).min(axis=1)
    rho = np.minimum(layer_corr, 0.98 * bound)
    rho[0] = 0.0
    p_sub = np.zeros((layers, len(subsets)))
    fresh = pi
    for attempt in range(8):
        fresh = (pi - rho[:, None] * shifted) / (1.0 - rho[:, None])
        fresh = np.clip(fresh, 0.0, None)
        fresh *= k / fresh.sum(axis=1, keepdims=True)
        p_sub, ok = _fit_subsets(fresh, gm, subsets)
        if ok.all():
            break
        bad = ~ok & (rho > 0)
        if not bad.any() or attempt == 7:
            li = int(np.flatnonzero(~ok)[0])
            raise InputError(
                f"{where}: MoE layer {m.moe_layer_indices[li]}: the expert load is too"
                f" concentrated for {'group-limited ' if grouped_routing else ''}routing of"
                f" {k} distinct experts (an expert or group takes too large a share); use a"
                " smaller zipf exponent or max_activation"
            )
        rho[bad] = np.where(attempt >= 5, 0.0, rho[bad] / 2)

    sp, sa = _alias_rows(np.where(p_sub > 0, p_sub, 0.0))
    tables = _systematic_tables(fresh, members, k, seed)
    return _Design(
        subset_thresh=_thresholds(sp),
        subset_alias=sa,
        packed=tables[0],
        start=tables[1],
        sigma=sigma.astype(expert_dtype(e)),
        layer_corr=rho,
        width=members.shape[1],
    )


def _thresholds(prob: np.ndarray) -> np.ndarray:
    """Alias acceptance probabilities as 32-bit integer thresholds (uint64, 2^32 = always)."""
    return np.round(np.clip(prob, 0.0, 1.0) * 2.0**32).astype(np.uint64)


def _systematic_tables(
    fresh: np.ndarray, members: np.ndarray, k: int, seed: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: (end of interval, expert) per position and inverse lookup of every row.

    Row (S, o) holds the experts of subset S in the o-th random order; expert i of S spans
    ``q_i = k * pi_i / load(S)`` units of the cumulative axis [0, k).
    """
    layers = fresh.shape[0]
    c, mm = members.shape
    unit = 1 << _UNIT_BITS
    shift = _UNIT_BITS - _CELL_BITS
    cells = k << _CELL_BITS
    rows = c * _ORDERS
    rng = np.random.default_rng(np.random.SeedSequence([*seed, 4]))
    out_packed = np.empty((layers, rows * mm), dtype=np.int64)
    out_start = np.empty((layers, rows * cells), dtype=np.uint8 if mm <= 256 else np.int32)
    for li in range(layers):
        q = fresh[li][members]  # [C, M]
        load = q.sum(axis=1, keepdims=True)
        q = k * q / np.where(load > 0, load, 1.0)
        q[load[:, 0] <= 0] = k / mm  # subsets never drawn (P(S) = 0)
        q = np.clip(q, 0.0, _Q_MAX)  # binds only where P(S) = 0
        order = np.argsort(rng.random((c, _ORDERS, mm)), axis=2)
        qo = np.take_along_axis(np.broadcast_to(q[:, None, :], order.shape), order, axis=2)
        cum = np.zeros((c, _ORDERS, mm + 1), dtype=np.int64)
        cumf = np.cumsum(qo, axis=2)
        cum[:, :, 1:] = np.round(cumf / cumf[:, :, -1:] * (k * unit)).astype(np.int64)
        cum[:, :, -1] = k * unit
        ids = np.take_along_axis(np.broadcast_to(members[:, None, :], order.shape), order, axis=2)
        # start[row, cell] = number of inner boundaries cum[j] (1 <= j < M) <= the cell's left
        # edge, i.e. the position whose interval holds that edge
        key = ((cum[:, :, 1:mm] + (1 << shift) - 1) >> shift).reshape(rows, mm - 1)
        flat = (np.arange(rows)[:, None] * cells + np.minimum(key, cells)).ravel()
        flat = flat[key.ravel() < cells]
        counts = np.bincount(flat, minlength=rows * cells).reshape(rows, cells)
        out_start[li] = np.cumsum(counts, axis=1).ravel()
        out_packed[li] = ((cum[:, :, 1:] << 16) | ids).ravel()
    return out_packed, out_start


_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def _draw(d: _Design, li: int, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n fresh expert sets at layer li: a group subset, then systematic sampling inside it.

    Systematic sampling takes the experts under the points u, u+1, ..., u+k-1 of the
    cumulative inclusion axis of a randomly ordered row: exactly k distinct experts (every
    interval is shorter than 1), each with its inclusion probability, no rejection.
    """
    mm = d.width
    cells = k << _CELL_BITS
    c = d.subset_thresh.shape[1]
    raw = rng.bit_generator.random_raw
    r1 = raw(n)
    col = (((r1 >> _SHIFT32) * np.uint64(c)) >> _SHIFT32).astype(np.intp)
    subset = np.where((r1 & _LOW32) < d.subset_thresh[li][col], col, d.subset_alias[li][col])
    r2 = raw(n)
    row = (subset * _ORDERS + ((r2 >> _SHIFT32) % np.uint64(_ORDERS)).astype(np.intp))[:, None]
    u = (r2 & np.uint64((1 << _UNIT_BITS) - 1)).astype(np.int64)[:, None]
    x = u + (np.arange(k, dtype=np.int64) << _UNIT_BITS)[None, :]  # [n, k] points
    flat = row * mm + d.start[li][row * cells + (x >> (_UNIT_BITS - _CELL_BITS))]
    packed = d.packed[li]
    val = packed[flat]
    todo = np.flatnonzero(x >= (val >> 16))
    if todo.size:  # step over the few boundaries inside a lookup cell
        flat, val, x = flat.ravel(), val.ravel(), x.ravel()
        while todo.size:
            flat[todo] += 1
            val[todo] = packed[flat[todo]]
            todo = todo[x[todo] >= (val[todo] >> 16)]
        val = val.reshape(n, k)
    return (val & 0xFFFF).astype(d.sigma.dtype)


# --------------------------------------------------------------------------- generation


def _seq_tenants(config: SynthConfig, seqs: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
    tenants = _tenants(config)
    if len(tenants) == 1:
        return np.zeros(seqs.shape, dtype=np.intp)
    shares = np.array([t.share for t in tenants])
    out = np.empty(seqs.shape, dtype=np.intp)
    for b in np.unique(seqs // _SEQ_BLOCK):
        if b not in cache:
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3, int(b)]))
            cache[int(b)] = rng.choice(len(tenants), size=_SEQ_BLOCK, p=shares / shares.sum())
        sel = seqs // _SEQ_BLOCK == b
        out[sel] = cache[int(b)][seqs[sel] % _SEQ_BLOCK]
    return out


def _meta(config: SynthConfig, designs: list[_Design], gpus: list[np.ndarray]) -> TraceMeta:
    tenants = _tenants(config)
    desc = []
    for t, d, g in zip(tenants, designs, gpus, strict=True):
        desc.append(
            {
                "name": t.name,
                "share": t.share,
                "gpus": [int(x) for x in g],
                "popularity": (
                    f"load statistics {t.load_stats.source}"
                    if t.load_stats is not None
                    else f"zipf {_exponent(config, t)}"
                ),
                "layer_corr_effective": [round(float(x), 6) for x in d.layer_corr],
            }
        )
    knobs = (
        f"zipf_exponent={config.zipf_exponent} max_activation={config.max_activation}"
        f" token_corr={config.token_corr} layer_corr={config.layer_corr}"
        f" seq_len={config.seq_len} step_tokens={config.step_tokens}"
        f" num_gpus={config.num_gpus} tenants={len(tenants)} seed={config.seed}"
    )
    return TraceMeta(
        model=config.model,
        source="synthetic",
        produced_by=f"moe-netsim synth: {knobs}",
        extra={"synthetic": {"tenants": desc}},
    )


@dataclass(slots=True)
class _Carry:
    """The last token of the previous unit (for sequences that continue across units)."""

    sets: np.ndarray | None = None  # [layers, k]


def _unit(
    config: SynthConfig,
    designs: list[_Design],
    gpus: list[np.ndarray],
    u: int,
    carry: _Carry,
    tenant_cache: dict[int, np.ndarray],
) -> dict[str, np.ndarray]:
    m = config.model
    k = m.top_k
    start = u * _UNIT_TOKENS
    n = min(_UNIT_TOKENS, config.num_tokens - start)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, u]))
    tok = np.arange(start, start + n, dtype=np.int64)
    seq = tok // config.seq_len
    position = (tok % config.seq_len).astype(np.int32)
    tenant = _seq_tenants(config, seq, tenant_cache)
    origin = np.empty(n, dtype=np.int32)
    for ti, g in enumerate(gpus):
        sel = tenant == ti
        origin[sel] = g[seq[sel] % len(g)]
    by_tenant = [np.flatnonzero(tenant == ti) for ti in range(len(designs))]
    rho_l = np.stack([d.layer_corr for d in designs])  # [tenants, layers]

    experts = np.empty((n, m.num_moe_layers, k), dtype=expert_dtype(m.num_routed_experts))
    idx = np.arange(n)
    plain = config.token_corr == 0 and not rho_l.any() and len(designs) == 1
    for li in range(m.num_moe_layers):
        if plain:  # independent fresh draws
            experts[:, li] = _draw(designs[0], li, n, k, rng)
            continue
        token_copy = (rng.random(n) < config.token_corr) & (position > 0)
        layer_copy = ~token_copy & (rng.random(n) < rho_l[tenant, li])
        base = np.empty((n, k), dtype=experts.dtype)
        for ti, d in enumerate(designs):
            rows = by_tenant[ti]
            if not rows.size:
                continue
            lc = rows[layer_copy[rows]]
            if lc.size:
                base[lc] = d.sigma[li][experts[lc, li - 1]]
            fr = rows[~token_copy[rows] & ~layer_copy[rows]]
            if fr.size:
                base[fr] = _draw(d, li, fr.size, k, rng)
        src = np.maximum.accumulate(np.where(token_copy, -1, idx))
        out = base[np.maximum(src, 0)]
        head = src < 0  # copies reaching back into the previous unit
        if head.any():
            if carry.sets is None:  # position > 0 at a unit start implies a previous unit
                raise RuntimeError("synthetic trace: token copy without a previous token")
            out[head] = carry.sets[li]
        experts[:, li] = out
    carry.sets = experts[-1].copy() if n else carry.sets
    return {
        "experts": experts,
        "seq_id": seq,
        "position": position,
        "origin_gpu": origin,
        "step": (tok // config.step_tokens).astype(np.int32),
    }


def build_designs(config: SynthConfig) -> list[_Design]:
    """Sampling tables of every tenant (the expensive, token-independent part)."""
    out = []
    for ti, (t, pi) in enumerate(zip(_tenants(config), tenant_activation(config), strict=True)):
        where = t.load_stats.source if t.load_stats is not None else f"tenant {t.name!r}"
        seed = [config.seed, 5, ti]
        out.append(_design(pi, config.model, config.layer_corr, where or "load statistics", seed))
    return out


def iter_synthetic(config: SynthConfig, chunk_tokens: int = 16_384) -> Iterator[RoutingTrace]:
    """Generate the trace block by block (bounded memory).

    The tokens depend only on the configuration (seed included), never on ``chunk_tokens``.
    """
    if chunk_tokens < 1:
        raise InputError("synthetic trace: chunk_tokens must be >= 1")
    designs = build_designs(config)
    gpus = _tenant_gpus(config)
    meta = _meta(config, designs, gpus)
    units = -(-config.num_tokens // _UNIT_TOKENS)
    carry = _Carry()
    tenant_cache: dict[int, np.ndarray] = {}
    buffer: list[dict[str, np.ndarray]] = []  # raw columns; one RoutingTrace per chunk
    buffered = 0
    for u in range(units):
        unit = _unit(config, designs, gpus, u, carry, tenant_cache)
        buffer.append(unit)
        buffered += len(unit["seq_id"])
        while buffered >= chunk_tokens or (u == units - 1 and buffered > 0):
            joined = {
                key: np.concatenate([b[key] for b in buffer]) if len(buffer) > 1 else buffer[0][key]
                for key in buffer[0]
            }
            take = min(chunk_tokens, buffered)
            yield RoutingTrace(meta=meta, **{key: a[:take] for key, a in joined.items()})
            buffered -= take
            buffer = [{key: a[take:] for key, a in joined.items()}] if buffered else []


def generate_trace(config: SynthConfig) -> RoutingTrace:
    """The whole synthetic trace in memory."""
    from traces.io import concat_traces

    blocks = list(iter_synthetic(config))
    if not blocks:
        raise InputError("synthetic trace: num_tokens must be >= 1 to build an in-memory trace")
    return concat_traces(blocks)
