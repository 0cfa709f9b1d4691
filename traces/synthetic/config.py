"""Knobs of the synthetic generator: workloads (tenants), popularity, co-activation, drift."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from traces.infra.errors import InputError
from traces.model import ModelSpec

if TYPE_CHECKING:  # no numpy or pyarrow here: the command line's parsers read these knobs
    from traces.load_stats import LoadStats
    from traces.synthetic.modes import ModeTable

CURVES = ("zipf", "esft")  # popularity rank curves (traces.synthetic.popularity)
FIT_DEFAULT_MODES = 64  # held-out lift statistics on ESFT: 64 modes beat 32 on every measure


@dataclass(frozen=True, slots=True, eq=False)
class TenantSpec:
    """One workload of a mixture: its share of sequences, its GPUs and its expert popularity."""

    share: float = field(metadata={"help": "Relative share of sequences (normalised)."})
    gpus: tuple[int, ...] = field(
        default=(), metadata={"help": "GPUs serving it; () = an equal contiguous block."}
    )
    zipf_exponent: float | None = field(
        default=None, metadata={"help": "Own Zipf exponent; None = the config's popularity."}
    )
    load_stats: LoadStats | None = field(
        default=None, metadata={"help": "Fit its popularity to these counts instead of Zipf."}
    )
    name: str = ""
    share_end: float | None = field(
        default=None,
        metadata={"help": "Share at the last step (linear in steps from share); None = share."},
    )
    fit: ModeTable | None = field(
        default=None,
        metadata={"help": "Popularity and co-activation fitted to a trace (fit_modes)."},
    )

    def __post_init__(self) -> None:
        for key in ("share", "share_end"):
            v = getattr(self, key)
            if v is not None and (not math.isfinite(v) or v <= 0):
                raise InputError(f"tenant {self.name!r}: {key} must be a positive number")
        if any(g < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise InputError(f"tenant {self.name!r}: GPUs must be distinct and >= 0")
        if self.zipf_exponent is not None and (
            not math.isfinite(self.zipf_exponent) or self.zipf_exponent < 0
        ):
            raise InputError(f"tenant {self.name!r}: zipf_exponent must be finite and >= 0")
        given = [k for k in ("zipf_exponent", "load_stats", "fit") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InputError(f"tenant {self.name!r}: give only one of {', '.join(given)}")


@dataclass(frozen=True, slots=True, eq=False)
class SynthConfig:
    """Knobs of the synthetic generator.

    Popularity: ``zipf_exponent`` (Zipf), ``curve="esft"`` (the measured real rank curve), or
    neither: the model's calibrated preset (``popularity.popularity_preset``).  Co-activation
    inside a token: ``modes`` latent routing modes of ``mode_sigma`` contrast (``modes=1``: none),
    or a table fitted to a real trace (``fit``).  Drift: popularity phases beginning at
    ``phase_steps``, blended over ``drift_ramp_steps``; tenants' ``share_end``.
    """

    model: ModelSpec
    num_tokens: int = field(metadata={"help": "Tokens to generate."})
    seq_len: int = field(default=512, metadata={"help": "Tokens per sequence."})
    step_tokens: int = field(default=4096, metadata={"help": "Tokens per step (micro-batch)."})
    num_gpus: int = field(default=8, metadata={"help": "GPUs that sequences are spread over."})
    zipf_exponent: float | None = field(
        default=None,
        metadata={
            "help": "Activation of the r-th hottest expert ~ r^-exponent; None = the model's"
            " preset (DeepSeek-R1/V3: Zipf 0.45, busiest expert ~7x the mean as in SGLang's"
            " statistics)."
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
    max_activation: float | None = field(
        default=None,
        metadata={"help": "Cap on one expert's activation probability; None = the preset's."},
    )
    load_stats: LoadStats | None = field(
        default=None, metadata={"help": "Fit popularity to these counts instead of Zipf."}
    )
    tenants: tuple[TenantSpec, ...] = field(
        default=(), metadata={"help": "Workload mixture; () = one workload on all GPUs."}
    )
    curve: str | None = field(
        default=None,
        metadata={"help": "Popularity rank curve, 'zipf' or 'esft'; None = the preset's."},
    )
    curve_sd: float | None = field(
        default=None,
        metadata={"help": "Spread of the per-layer exponent of the esft curve; None = preset."},
    )
    modes: int | None = field(
        default=None,
        metadata={"help": "Latent routing modes per layer (co-activation); None = preset."},
    )
    mode_sigma: float | None = field(
        default=None,
        metadata={"help": "Contrast of the modes (log-normal sd of their tilts); None = preset."},
    )
    fit: ModeTable | None = field(
        default=None,
        metadata={"help": "Popularity and co-activation fitted to a trace (fit_modes)."},
    )
    phase_steps: tuple[int, ...] = field(
        default=(),
        metadata={"help": "Steps at which a new popularity phase begins (drift)."},
    )
    drift_ramp_steps: int = field(
        default=0,
        metadata={"help": "Steps over which a phase change blends in linearly (0 = abrupt)."},
    )

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            raise InputError("synthetic trace: num_tokens must be >= 0")
        if self.seq_len < 1 or self.step_tokens < 1 or self.num_gpus < 1:
            raise InputError("synthetic trace: seq_len, step_tokens and num_gpus must be >= 1")
        for name in ("zipf_exponent", "curve_sd", "mode_sigma"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise InputError(f"synthetic trace: {name} must be a finite number >= 0")
        if self.curve is not None and self.curve not in CURVES:
            raise InputError(
                f"synthetic trace: unknown popularity curve {self.curve!r}; known:"
                f" {', '.join(sorted(CURVES))}"
            )
        if self.zipf_exponent is not None and self.curve == "esft":
            raise InputError("synthetic trace: zipf_exponent and curve 'esft' contradict")
        if self.seed < 0:
            raise InputError(f"synthetic trace: seed must be >= 0, got {self.seed}")
        for name in ("token_corr", "layer_corr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise InputError(f"synthetic trace: {name} must be in [0, 1), got {v}")
        m = self.model
        cap = self.max_activation
        if cap is not None and not (m.top_k / m.num_routed_experts <= cap < 1):
            raise InputError(
                f"synthetic trace: max_activation must be in [{m.top_k}/{m.num_routed_experts},"
                f" 1), got {cap}"
            )
        if self.modes is not None and not 1 <= self.modes <= 256:
            raise InputError(f"synthetic trace: modes must be in 1..256, got {self.modes}")
        self._check_drift()
        for t in self.tenants:
            if t.gpus and max(t.gpus) >= self.num_gpus:
                raise InputError(
                    f"tenant {t.name!r}: GPU {max(t.gpus)} out of range 0..{self.num_gpus - 1}"
                )
        if len(self.tenants) > self.num_gpus and any(not t.gpus for t in self.tenants):
            raise InputError("synthetic trace: more tenants than GPUs; give each tenant GPUs")
        if self.tenants and (self.load_stats is not None or self.fit is not None):
            raise InputError(
                "synthetic trace: with tenants, give load statistics or a fitted trace per tenant"
            )
        if self.load_stats is not None and self.fit is not None:
            raise InputError("synthetic trace: give load statistics or a fitted trace, not both")
        sources = [(self.load_stats, "load statistics"), (self.fit, "fitted trace")]
        sources += [(t.load_stats, "load statistics") for t in self.tenants]
        sources += [(t.fit, "fitted trace") for t in self.tenants]
        for src, what in sources:
            if src is not None and geometry(src.model) != geometry(m):
                raise InputError(
                    f"{src.source or what}: recorded for {src.model.name!r},"
                    f" whose geometry differs from the trace model {m.name!r}"
                )

    def _check_drift(self) -> None:
        steps = self.phase_steps
        if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise InputError(
                "synthetic trace: phase changes must be increasing steps >= 1, got"
                f" {list(steps)}"
            )
        if self.drift_ramp_steps < 0:
            raise InputError("synthetic trace: the drift ramp must be >= 0 steps")
        gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
        if gaps and min(gaps) < self.drift_ramp_steps:
            raise InputError(
                f"synthetic trace: phase changes {list(steps)} are closer than the drift ramp"
                f" ({self.drift_ramp_steps} steps); one ramp must end before the next begins"
            )

    @property
    def num_steps(self) -> int:
        """Steps the trace spans (the last token's step + 1)."""
        return max(1, -(-self.num_tokens // self.step_tokens))


def geometry(m: ModelSpec) -> tuple[int, int, int, int, int]:
    """What two models must share for one's statistics to drive the other's trace."""
    return (m.num_moe_layers, m.num_routed_experts, m.top_k, m.num_expert_groups, m.topk_groups)
