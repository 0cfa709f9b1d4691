"""Seeded synthetic routing traces: calibrated popularity, co-activation modes, tenants, drift.

Modules: ``config`` (the knobs), ``popularity`` (rank curves, calibrated presets, drift
relabelling), ``modes`` (co-activation: latent routing modes, fitted or parametric),
``design`` (exact sampling tables and the vectorised draw), ``generate`` (tokens, tenants,
correlation, drift phases, streaming).  The model is described in
docs/background/synthetic-traces.md.
"""

from traces.synthetic.config import SynthConfig, TenantSpec
from traces.synthetic.generate import build_designs, generate_trace, iter_synthetic
from traces.synthetic.modes import ModeTable, fit_modes
from traces.synthetic.popularity import (
    PRESETS,
    layer_popularity,
    popularity_preset,
    tenant_activation,
)

__all__ = [
    "PRESETS",
    "ModeTable",
    "SynthConfig",
    "TenantSpec",
    "build_designs",
    "fit_modes",
    "generate_trace",
    "iter_synthetic",
    "layer_popularity",
    "popularity_preset",
    "tenant_activation",
]
