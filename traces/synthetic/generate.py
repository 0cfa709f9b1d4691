"""Token generation: tenants, drift phases, token and layer correlation, streamed in units.

Correlation, keeping the marginals
    With probability ``token_corr`` a token repeats the previous token of its sequence at that
    layer (a stationary Markov chain).  Otherwise, with probability ``layer_corr``, it maps its
    experts of the previous MoE layer through a fixed bijection (group by group and expert by
    expert, matched by popularity rank); the fresh draws then use
    ``(pi_l - rho * pi_{l-1} o sigma^-1) / (1 - rho)`` so that the mixture still has
    marginals ``pi_l``.  Where that is infeasible the layer's ``rho`` is lowered (recorded in
    the trace metadata as ``layer_corr_effective``).

Drift (time is the ``step`` column)
    Every tenant has one design per popularity phase; phase p relabels the experts of phase 0
    (``popularity.phase_relabel``).  A token at step s after the phase change at step b draws
    from the new phase with probability ``clip((s - b) / ramp, 0, 1)`` (1 from b on when the
    ramp is 0), so per-window activation moves linearly between the phases.  Tenant shares move
    linearly from ``share`` (step 0) to ``share_end`` (last step); a sequence's tenant is drawn
    at its first token's step.

Speed
    Draws use alias tables (one uniform per expert), so a 1M-token DeepSeek-R1 trace takes
    seconds, not minutes.  Random streams are drawn per fixed unit of tokens in order, so the
    output depends on the configuration only, never on the chunk size a caller asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from traces.infra.errors import InputError
from traces.synthetic.config import SynthConfig, TenantSpec
from traces.synthetic.design import MODE_CAP, Design, build_design, draw
from traces.synthetic.modes import parametric_modes
from traces.synthetic.popularity import (
    curve_name,
    phase_relabel,
    resolve,
    tenant_activation,
    tenants_of,
)
from traces.trace import RoutingTrace, TraceMeta, expert_dtype

_UNIT_TOKENS = 8192  # random streams are drawn per unit, so output is chunk-size independent
_SEQ_BLOCK = 4096  # tenants of sequences are drawn per block of sequence ids


def _tenant_gpus(config: SynthConfig) -> list[np.ndarray]:
    """GPUs of every tenant: given, or consecutive blocks in proportion to the shares."""
    tenants = tenants_of(config)
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


def num_phases(config: SynthConfig) -> int:
    return len(config.phase_steps) + 1


def _tenant_modes(config: SynthConfig, t: TenantSpec, ti: int, pi: np.ndarray):
    if t.fit is not None:
        return t.fit.weights, t.fit.activation
    pop = resolve(config)
    if pop.modes <= 1:
        return None
    return parametric_modes(pi, pop.modes, pop.mode_sigma, [config.seed, 5, ti], MODE_CAP)


def build_designs(config: SynthConfig) -> list[Design]:
    """Sampling tables of every (tenant, phase), tenant-major (the token-independent part)."""
    last = config.num_steps - 1
    late = [s for s in config.phase_steps if s > last]
    if late:
        raise InputError(
            f"synthetic trace: phase change at step {late[0]} is after the last step ({last})"
        )
    out = []
    for ti, (t, pi) in enumerate(zip(tenants_of(config), tenant_activation(config), strict=True)):
        src = t.load_stats or t.fit
        where = (src.source if src is not None else "") or f"tenant {t.name!r}"
        modes = _tenant_modes(config, t, ti, pi)
        for ph in range(num_phases(config)):
            perm = phase_relabel(config.model, config.seed, ti, ph)
            rows = np.arange(pi.shape[0])[:, None]
            pi_p = np.empty_like(pi)
            pi_p[rows, perm] = pi
            modes_p = None
            if modes is not None:
                act = np.empty_like(modes[1])
                act[rows[:, :, None], np.arange(act.shape[1])[None, :, None], perm[:, None, :]] = (
                    modes[1]
                )
                modes_p = (modes[0], act)
            seed = [config.seed, 5, ti] + ([ph] if ph else [])
            out.append(build_design(pi_p, modes_p, config.model, config.layer_corr, where, seed))
    return out


def _shares_at(config: SynthConfig, steps: np.ndarray) -> np.ndarray:
    """Tenant shares [len(steps), tenants] at the given steps (linear from share to share_end)."""
    tenants = tenants_of(config)
    a = np.array([t.share for t in tenants])
    b = np.array([t.share if t.share_end is None else t.share_end for t in tenants])
    frac = steps / max(config.num_steps - 1, 1)
    return a[None, :] + (b - a)[None, :] * frac[:, None]


def _seq_tenants(config: SynthConfig, seqs: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
    """The tenant of every sequence, drawn at the step of its first token."""
    if len(tenants_of(config)) == 1:
        return np.zeros(seqs.shape, dtype=np.intp)
    out = np.empty(seqs.shape, dtype=np.intp)
    for b in np.unique(seqs // _SEQ_BLOCK):
        if b not in cache:
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3, int(b)]))
            cache[int(b)] = rng.random(_SEQ_BLOCK)  # the draws of rng.choice(p=shares)
        sel = seqs // _SEQ_BLOCK == b
        first_step = (seqs[sel] * config.seq_len) // config.step_tokens
        cdf = np.cumsum(_shares_at(config, first_step), axis=1)
        cdf /= cdf[:, -1:]
        u = cache[int(b)][seqs[sel] % _SEQ_BLOCK]
        out[sel] = (cdf <= u[:, None]).sum(axis=1)
    return out


def _token_phases(config: SynthConfig, step: np.ndarray, unit: int) -> np.ndarray:
    """Drift phase of every token: the last phase change at or before its step, blended."""
    if not config.phase_steps:
        return np.zeros(step.shape, dtype=np.intp)
    bounds = np.asarray(config.phase_steps, dtype=np.int64)
    p = np.searchsorted(bounds, step, side="right")  # phase once the change is complete
    if config.drift_ramp_steps == 0:
        return p.astype(np.intp)
    started = bounds[np.maximum(p - 1, 0)]
    frac = np.where(p > 0, np.clip((step - started) / config.drift_ramp_steps, 0, 1), 1.0)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 10, unit]))
    return np.where(rng.random(step.shape) < frac, p, p - 1).astype(np.intp)


def _meta(config: SynthConfig, designs: list[Design], gpus: list[np.ndarray]) -> TraceMeta:
    tenants = tenants_of(config)
    n_ph = num_phases(config)
    desc = []
    for ti, (t, g) in enumerate(zip(tenants, gpus, strict=True)):
        d = designs[ti * n_ph]
        desc.append(
            {
                "name": t.name,
                "share": t.share,
                "share_end": t.share if t.share_end is None else t.share_end,
                "gpus": [int(x) for x in g],
                "popularity": curve_name(config, t),
                "modes": d.num_modes,
                "mode_shrink": [round(float(x), 6) for x in d.mode_shrink],
                "layer_corr_effective": [round(float(x), 6) for x in d.layer_corr],
            }
        )
    pop = resolve(config)
    knobs = (
        f"popularity={pop.curve} zipf_exponent={pop.zipf_exponent} curve_sd={pop.curve_sd}"
        f" max_activation={pop.max_activation} modes={pop.modes}"
        f" mode_sigma={pop.mode_sigma} token_corr={config.token_corr}"
        f" layer_corr={config.layer_corr} seq_len={config.seq_len}"
        f" step_tokens={config.step_tokens} num_gpus={config.num_gpus}"
        f" tenants={len(tenants)} phase_steps={list(config.phase_steps)}"
        f" drift_ramp_steps={config.drift_ramp_steps} seed={config.seed}"
    )
    return TraceMeta(
        model=config.model,
        source="synthetic",
        produced_by=f"moe-netsim synth: {knobs}",
        extra={
            "synthetic": {
                "tenants": desc,
                "phase_steps": list(config.phase_steps),
                "drift_ramp_steps": config.drift_ramp_steps,
            }
        },
    )


@dataclass(slots=True)
class _Carry:
    """The last token of the previous unit (for sequences that continue across units)."""

    sets: np.ndarray | None = None  # [layers, k]


def _unit(
    config: SynthConfig,
    designs: list[Design],
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
    step = tok // config.step_tokens
    tenant = _seq_tenants(config, seq, tenant_cache)
    origin = np.empty(n, dtype=np.int32)
    for ti, g in enumerate(gpus):
        sel = tenant == ti
        origin[sel] = g[seq[sel] % len(g)]
    comp = tenant * num_phases(config) + _token_phases(config, step, u)
    by_comp = [np.flatnonzero(comp == ci) for ci in range(len(designs))]
    rho_l = np.stack([d.layer_corr for d in designs])  # [components, layers]

    experts = np.empty((n, m.num_moe_layers, k), dtype=expert_dtype(m.num_routed_experts))
    idx = np.arange(n)
    plain = config.token_corr == 0 and not rho_l.any() and len(designs) == 1
    for li in range(m.num_moe_layers):
        if plain:  # independent fresh draws
            experts[:, li] = draw(designs[0], li, n, k, rng)
            continue
        token_copy = (rng.random(n) < config.token_corr) & (position > 0)
        layer_copy = ~token_copy & (rng.random(n) < rho_l[comp, li])
        base = np.empty((n, k), dtype=experts.dtype)
        for ci, d in enumerate(designs):
            rows = by_comp[ci]
            if not rows.size:
                continue
            lc = rows[layer_copy[rows]]
            if lc.size:
                base[lc] = d.sigma[li][experts[lc, li - 1]]
            fr = rows[~token_copy[rows] & ~layer_copy[rows]]
            if fr.size:
                base[fr] = draw(d, li, fr.size, k, rng)
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
        "step": step.astype(np.int32),
    }


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
