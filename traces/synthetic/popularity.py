"""Expert popularity of the synthetic generator: rank curves, calibrated presets, drift phases.

A layer's activation ``pi[i]`` (probability that a token routes to expert i; a row sums to
top_k) is a rank curve laid over a random permutation of the experts, capped by
``max_activation`` (water-filling).  Curves:

- Zipf: the r-th hottest expert ~ ``r^-s``.
- esft: the measured rank curve of real DeepSeek-V2-Lite routing (``ESFT_RANK_CURVE``: the
  geometric mean over 104 task-layers of load / mean load, hottest first), raised per layer to
  an exponent ``gamma_l ~ N(1, curve_sd)`` (the spread of skew between layers) and
  interpolated by rank quantile for other expert counts.  Real routing has a flatter head and a
  steeper cold tail than Zipf (coldest expert ~0.1x the mean, not ~0.6x).

``PRESETS`` holds each model's calibration (see docs/background/synthetic-traces.md for the
measurements): DeepSeek-R1/V3 from SGLang's load statistics, DeepSeek-V2-Lite / DeepSeekMoE-16B
from the real ESFT routing (104 task-layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.synthetic.config import SynthConfig, TenantSpec


@dataclass(frozen=True, slots=True)
class PopularityPreset:
    """A model's calibrated defaults for popularity and co-activation."""

    curve: str  # one of CURVES
    zipf_exponent: float = 0.0
    curve_sd: float = 0.0
    max_activation: float = 0.45
    modes: int = 1
    mode_sigma: float = 0.0
    calibrated_on: str = ""


# Measured on the real ESFT routing (4 tasks x 26 layers), see the background page:
# busiest/mean per layer mean 4.31 (10-90 %: 2.64-6.05, max 7.69), coldest/mean 0.109.
ESFT_BUSIEST_OVER_MEAN = {"mean": 4.31, "q10": 2.64, "q90": 6.05, "max": 7.69}
ESFT_COLDEST_OVER_MEAN = 0.109
ESFT_TOP8_SHARE = 0.342  # share of a layer's routes on its 8 busiest of 64 experts
ESFT_BOTTOM16_SHARE = 0.078  # share on its 16 coldest
# Pairwise lift over frequent pairs (expected co-activations >= 20), pooled over the 104
# task-layers, at coactivation.LIFT_QUANTILES (10, 25, 50, 75, 90 %).
ESFT_LIFT_QUANTILES = (0.015, 0.124, 0.461, 1.118, 2.053)
# Distinct blocks of 8 experts per token, blocks packed by co-activation / contiguous blocks
# (coactivation.packed_blocks, 8 blocks): 0.605-0.695 over the tasks.
ESFT_PACKED_OVER_CONTIGUOUS = 0.659

_SGLANG_R1 = PopularityPreset(
    "zipf", zipf_exponent=0.45, max_activation=0.45, calibrated_on="SGLang DeepSeek-R1 counts"
)
# Load / mean load of a layer's r-th busiest of 64 experts: geometric mean over the 4 ESFT
# tasks x 26 MoE layers (the per-layer exponent around it has sd 0.27 in the data).
ESFT_RANK_CURVE = (
    4.216, 3.37, 2.909, 2.595, 2.392, 2.224, 2.076, 1.932, 1.807, 1.715, 1.621, 1.537, 1.476,
    1.412, 1.345, 1.296, 1.253, 1.21, 1.169, 1.122, 1.084, 1.051, 1.015, 0.983, 0.953, 0.928,
    0.899, 0.866, 0.839, 0.813, 0.789, 0.766, 0.746, 0.727, 0.709, 0.688, 0.668, 0.647, 0.627,
    0.609, 0.592, 0.576, 0.558, 0.54, 0.523, 0.503, 0.483, 0.466, 0.45, 0.432, 0.413, 0.396,
    0.376, 0.357, 0.339, 0.319, 0.296, 0.269, 0.246, 0.219, 0.193, 0.162, 0.127, 0.084,
)

_ESFT = PopularityPreset(
    "esft", curve_sd=0.25, max_activation=0.9, modes=8, mode_sigma=3.0,
    calibrated_on="ESFT DeepSeek-V2-Lite routing",
)
PRESETS: dict[str, PopularityPreset] = {
    "deepseek-r1": _SGLANG_R1,
    "deepseek-v3": _SGLANG_R1,
    "deepseek-v2-lite": _ESFT,
    "deepseek-moe-16b": _ESFT,
}
DEFAULT_PRESET = _SGLANG_R1  # models without their own calibration


def popularity_preset(model: ModelSpec) -> PopularityPreset:
    """The model's calibrated preset (by name; others get DeepSeek-R1's Zipf)."""
    return PRESETS.get(model.name, DEFAULT_PRESET)


@dataclass(frozen=True, slots=True)
class Popularity:
    """What a configuration resolves to: the curve and the co-activation knobs in force."""

    curve: str
    zipf_exponent: float
    curve_sd: float
    max_activation: float
    modes: int
    mode_sigma: float


def resolve(config: SynthConfig) -> Popularity:
    """The config's knobs, with the model's preset wherever a knob is None."""
    p = popularity_preset(config.model)
    if config.zipf_exponent is not None:
        curve = "zipf"
    else:
        curve = config.curve or p.curve
    cap = config.max_activation
    if cap is None:
        cap = p.max_activation if curve == p.curve else DEFAULT_PRESET.max_activation
    return Popularity(
        curve=curve,
        zipf_exponent=p.zipf_exponent if config.zipf_exponent is None else config.zipf_exponent,
        curve_sd=p.curve_sd if config.curve_sd is None else config.curve_sd,
        max_activation=cap,
        # the preset's co-activation was calibrated with its own curve: it comes with it
        modes=(p.modes if curve == p.curve else 1) if config.modes is None else config.modes,
        mode_sigma=p.mode_sigma if config.mode_sigma is None else config.mode_sigma,
    )


def waterfill(w: np.ndarray, total: float, cap: float) -> np.ndarray:
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


def esft_curve(num_experts: int, exponent: float) -> np.ndarray:
    """``ESFT_RANK_CURVE ** exponent`` at the rank quantiles of ``num_experts`` experts."""
    ref = np.log(np.asarray(ESFT_RANK_CURVE))
    at = (np.arange(len(ref)) + 0.5) / len(ref)
    want = (np.arange(num_experts) + 0.5) / num_experts
    return np.exp(exponent * np.interp(want, at, ref))


def tenants_of(config: SynthConfig) -> tuple[TenantSpec, ...]:
    """The workloads of a config: its tenants, or one workload on all GPUs."""
    if config.tenants:
        return config.tenants
    return (TenantSpec(share=1.0, load_stats=config.load_stats, fit=config.fit, name="all"),)


def curve_name(config: SynthConfig, t: TenantSpec) -> str:
    """How a tenant's popularity is made, for the trace metadata."""
    if t.load_stats is not None:
        return f"load statistics {t.load_stats.source}"
    if t.fit is not None:
        return f"fitted to {t.fit.source} ({t.fit.num_modes} modes)"
    pop = resolve(config)
    if t.zipf_exponent is not None or pop.curve == "zipf":
        s = pop.zipf_exponent if t.zipf_exponent is None else t.zipf_exponent
        return f"zipf {s} cap {pop.max_activation}"
    return f"esft rank curve, exponent sd {pop.curve_sd}, cap {pop.max_activation}"


def _curve_activation(config: SynthConfig, t: TenantSpec, ti: int) -> np.ndarray:
    m = config.model
    pop = resolve(config)
    # tenant 0 keeps the stream of the single-workload generator
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, *([ti] if ti else [])]))
    E = m.num_routed_experts
    pi = np.empty((m.num_moe_layers, E))
    if t.zipf_exponent is not None or pop.curve == "zipf":
        s = pop.zipf_exponent if t.zipf_exponent is None else t.zipf_exponent
        base = waterfill(np.arange(1, E + 1, dtype=np.float64) ** (-s), m.top_k, pop.max_activation)
        for li in range(m.num_moe_layers):
            pi[li, rng.permutation(E)] = base
        return pi
    exp_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 6, ti]))
    gammas = np.clip(1 + pop.curve_sd * exp_rng.standard_normal(m.num_moe_layers), 0.05, 3)
    for li in range(m.num_moe_layers):
        base = waterfill(esft_curve(E, float(gammas[li])), m.top_k, pop.max_activation)
        pi[li, rng.permutation(E)] = base
    return pi


def tenant_activation(config: SynthConfig) -> list[np.ndarray]:
    """Target activation probabilities [moe_layers, experts] per tenant (rows sum to top_k)."""
    out = []
    for ti, t in enumerate(tenants_of(config)):
        if t.load_stats is not None:
            out.append(t.load_stats.activation())
        elif t.fit is not None:
            out.append(t.fit.marginals())
        else:
            out.append(_curve_activation(config, t, ti))
    return out


def layer_popularity(config: SynthConfig) -> np.ndarray:
    """Expected share of routes per expert [moe_layers, experts] (each row sums to 1).

    The share-weighted mixture over tenants of their activation (first phase, shares at step 0),
    divided by top_k.
    """
    tenants = tenants_of(config)
    shares = np.array([t.share for t in tenants]) / sum(t.share for t in tenants)
    acts = tenant_activation(config)
    return sum(w * a for w, a in zip(shares, acts, strict=True)) / config.model.top_k


def phase_relabel(model: ModelSpec, seed: int, tenant: int, phase: int) -> np.ndarray:
    """perm[l, i]: where expert i's role moves in drift phase ``phase`` (identity for phase 0).

    Groups are permuted, then experts inside each group, so group-limited routing that was
    feasible stays feasible.
    """
    L, E = model.num_moe_layers, model.num_routed_experts
    if phase == 0:
        return np.tile(np.arange(E), (L, 1))
    g = model.num_expert_groups
    per = E // g
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9, tenant, phase]))
    out = np.empty((L, E), dtype=np.intp)
    for li in range(L):
        gp = rng.permutation(g)
        inner = np.stack([rng.permutation(per) for _ in range(g)])
        out[li] = (gp[:, None] * per + inner).ravel()
    return out
