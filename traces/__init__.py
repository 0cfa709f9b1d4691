"""Routing traces: the native format, a synthetic generator and statistics.

Never imports simpy or highspy.  The names below are loaded on first use (PEP 562), so that
``from traces.infra.errors import InputError`` does not pull in pyarrow and pandas: the
command line starts in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traces.infra.lazy import lazy_attributes

if TYPE_CHECKING:
    from traces.infra.errors import InputError
    from traces.io import TraceWriter, iter_trace, read_trace, read_trace_meta, write_trace
    from traces.model import MODEL_PRESETS, ModelSpec, model_preset
    from traces.stats import activation_probability, expert_counts, summarize_load
    from traces.synthetic import SynthConfig, generate_trace, iter_synthetic
    from traces.trace import RoutingTrace, TraceMeta

_WHERE = {
    "InputError": "traces.infra.errors",
    "TraceWriter": "traces.io",
    "iter_trace": "traces.io",
    "read_trace": "traces.io",
    "read_trace_meta": "traces.io",
    "write_trace": "traces.io",
    "MODEL_PRESETS": "traces.model",
    "ModelSpec": "traces.model",
    "model_preset": "traces.model",
    "activation_probability": "traces.stats",
    "expert_counts": "traces.stats",
    "summarize_load": "traces.stats",
    "SynthConfig": "traces.synthetic",
    "generate_trace": "traces.synthetic",
    "iter_synthetic": "traces.synthetic",
    "RoutingTrace": "traces.trace",
    "TraceMeta": "traces.trace",
}

__all__ = [
    "InputError",
    "MODEL_PRESETS",
    "ModelSpec",
    "RoutingTrace",
    "SynthConfig",
    "TraceMeta",
    "TraceWriter",
    "activation_probability",
    "expert_counts",
    "generate_trace",
    "iter_synthetic",
    "iter_trace",
    "model_preset",
    "read_trace",
    "read_trace_meta",
    "summarize_load",
    "write_trace",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
