"""Routing traces: the native format, a synthetic generator and statistics.

Never imports simpy or highspy.
"""

from traces.infra.errors import InputError
from traces.io import TraceWriter, iter_trace, read_trace, read_trace_meta, write_trace
from traces.model import MODEL_PRESETS, ModelSpec, model_preset
from traces.stats import activation_probability, expert_counts, summarize_load
from traces.synthetic import SynthConfig, generate_trace, iter_synthetic
from traces.trace import RoutingTrace, TraceMeta

__all__ = [
    "MODEL_PRESETS",
    "InputError",
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
