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

from traces.importers.common import import_trace, write_blocks
from traces.importers.esft import iter_esft
from traces.importers.table import iter_table
from traces.importers.vllm import iter_vllm

__all__ = ["import_trace", "iter_esft", "iter_table", "iter_vllm", "write_blocks"]
