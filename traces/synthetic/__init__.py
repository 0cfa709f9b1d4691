"""Seeded synthetic routing traces: calibrated popularity, co-activation modes, tenants, drift.

Modules: ``config`` (the knobs), ``popularity`` (rank curves, calibrated presets, drift
relabelling), ``modes`` (co-activation: latent routing modes, fitted or parametric),
``design`` (exact sampling tables and the vectorised draw), ``generate`` (tokens, tenants,
correlation, drift phases, streaming).  The model is described in
docs/background/synthetic-traces.md.
"""

from typing import TYPE_CHECKING

from traces.infra.lazy import lazy_attributes

if TYPE_CHECKING:
    from traces.synthetic.config import SynthConfig, TenantSpec
    from traces.synthetic.generate import build_designs, generate_trace, iter_synthetic
    from traces.synthetic.modes import ModeTable, fit_modes
    from traces.synthetic.popularity import (
        PRESETS,
        layer_popularity,
        popularity_preset,
        tenant_activation,
    )

# Loaded on first use: the command line reads the generator's option table without the
# sampling code (start-up stays light).
_WHERE = {
    "SynthConfig": "traces.synthetic.config",
    "TenantSpec": "traces.synthetic.config",
    "build_designs": "traces.synthetic.generate",
    "generate_trace": "traces.synthetic.generate",
    "iter_synthetic": "traces.synthetic.generate",
    "ModeTable": "traces.synthetic.modes",
    "fit_modes": "traces.synthetic.modes",
    "PRESETS": "traces.synthetic.popularity",
    "layer_popularity": "traces.synthetic.popularity",
    "popularity_preset": "traces.synthetic.popularity",
    "tenant_activation": "traces.synthetic.popularity",
}

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

__getattr__ = lazy_attributes(__name__, _WHERE)
