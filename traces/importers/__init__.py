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

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from traces.importers.esft import iter_esft
from traces.importers.table import iter_table
from traces.importers.vllm import iter_vllm
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS, write_blocks
from traces.model import ModelSpec
from traces.trace import RoutingTrace


@dataclass(frozen=True)
class Importer:
    """One input format: ``iterate(source, model, chunk_tokens)`` yields trace blocks."""

    iterate: Callable[..., Iterator[RoutingTrace]]
    needs_model: bool = True  # False: the format implies its model (ESFT: DeepSeek-V2-Lite)


# The registry: every importable format by name.
IMPORTERS: dict[str, Importer] = {
    "esft": Importer(iter_esft, needs_model=False),
    "table": Importer(iter_table),
    "vllm": Importer(iter_vllm),
}


def import_trace(
    fmt: str,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: ModelSpec | None = None,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> int:
    """Import ``source`` in format ``fmt`` (a key of :data:`IMPORTERS`) to the trace ``out``."""
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise InputError(f"unknown trace format {fmt!r}; known: {', '.join(sorted(IMPORTERS))}")
    if model is None and importer.needs_model:
        raise InputError(f"format {fmt!r} does not say which model it is: pass --model")
    return write_blocks(out, importer.iterate(Path(source), model, chunk_tokens))


__all__ = ["IMPORTERS", "Importer", "import_trace", "iter_esft", "iter_table", "iter_vllm"]
