"""Importers: recorded routing from other tools into the native trace format.

Each importer is a generator of :class:`~traces.trace.RoutingTrace` blocks (bounded memory);
:func:`import_trace` writes them atomically with :class:`~traces.io.TraceWriter`.

=========  =====================================================================================
format     input
=========  =====================================================================================
esft       a folder of ``expert_weights_<L>.txt`` (DeepSeek ESFT expert-score logs)
vllm       int arrays [tokens, moe_layers, top_k], one per request: .npy, .npz or a folder
table      a long CSV or Parquet table with columns token, layer, rank, expert (+ optional)
=========  =====================================================================================

SGLang's ``logical_count`` JSON holds counts, not tokens: see :mod:`traces.load_stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traces.infra.lazy import lazy_attributes

if TYPE_CHECKING:
    from traces.importers.common import import_trace, write_blocks
    from traces.importers.esft import iter_esft
    from traces.importers.table import iter_table
    from traces.importers.vllm import iter_vllm

# loaded on first use, so that the format list (traces.importers.formats) imports nothing heavy
_WHERE = {
    "import_trace": "traces.importers.common",
    "iter_esft": "traces.importers.esft",
    "iter_table": "traces.importers.table",
    "iter_vllm": "traces.importers.vllm",
    "write_blocks": "traces.importers.common",
}

__all__ = ["import_trace", "iter_esft", "iter_table", "iter_vllm", "write_blocks"]

__getattr__ = lazy_attributes(__name__, _WHERE)
