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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from traces.importers.formats import COUNT_FORMATS, TRACE_FORMATS
from traces.infra.errors import InputError
from traces.infra.lazy import lazy_attributes
from traces.model import ModelSpec

if TYPE_CHECKING:  # numpy and the readers load on use: the CLI's parsers import this package
    from traces.importers.esft import iter_esft
    from traces.importers.table import iter_table
    from traces.importers.vllm import iter_vllm
    from traces.origins import OriginAssigner
    from traces.trace import RoutingTrace

# The readers load on first use: the command line's --help lists the formats without pyarrow.
__getattr__ = lazy_attributes(__name__, {
    "iter_esft": "traces.importers.esft",
    "iter_table": "traces.importers.table",
    "iter_vllm": "traces.importers.vllm",
})


def holds_counts(fmt: str, source: str | os.PathLike[str]) -> bool:
    """True when ``source`` in format ``fmt`` holds counts, not tokens."""
    src = Path(source)
    if fmt == "sglang":
        return True
    if fmt == "sglang-dump":
        from traces.importers.sglang_dump import dump_mode

        return dump_mode(src) != "per_token"
    if fmt == "trtllm":
        from traces.importers.trtllm import has_raw

        return not has_raw(src)
    return False


def import_trace(
    fmt: str,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: ModelSpec | None = None,
    chunk_tokens: int | None = None,
    options: dict[str, object] | None = None,
    origins: OriginAssigner | None = None,
    observe: Callable[[Iterable[RoutingTrace]], Iterable[RoutingTrace]] | None = None,
) -> int:
    """Import ``source`` in format ``fmt`` (see :data:`TRACE_FORMATS`) to the trace file ``out``.

    ``options``: ``ranks`` (sglang-dump: the ranks the dump must hold), ``physical_map``
    (sglang-routed, vllm-routed: [layers, P] physical_to_logical_map when ids are physical),
    ``indices_column`` / ``scores_column`` (topk-parquet).  ``origins``: write every token's
    origin GPU as that assigner gives it (an origin model on a cluster, :mod:`traces.origins`);
    None keeps what the source records.  ``chunk_tokens`` defaults to the trace writer's row
    group; ``observe`` wraps the stream of blocks on their way to the file (a progress bar).
    """
    from traces.importers.esft import iter_esft
    from traces.io import DEFAULT_ROW_GROUP_TOKENS, write_blocks
    from traces.origins import with_origins

    chunk_tokens = DEFAULT_ROW_GROUP_TOKENS if chunk_tokens is None else chunk_tokens
    src = Path(source)
    if fmt not in TRACE_FORMATS:
        raise InputError(f"unknown trace format {fmt!r}; known: {', '.join(sorted(TRACE_FORMATS))}")
    blocks: Iterable[RoutingTrace]
    if fmt == "esft":
        blocks = iter_esft(src, model, chunk_tokens)
    elif model is None:
        raise InputError(f"format {fmt!r} does not say which model it is: pass --model")
    else:
        blocks = _blocks(fmt, src, model, chunk_tokens, options or {})
    if origins is not None:
        blocks = with_origins(blocks, origins)
    return write_blocks(out, blocks if observe is None else observe(blocks))


def _blocks(
    fmt: str, src: Path, model: ModelSpec, chunk_tokens: int, options: dict[str, object]
) -> Iterator[RoutingTrace]:
    if fmt == "vllm":
        from traces.importers.vllm import iter_vllm

        return iter_vllm(src, model, chunk_tokens)
    if fmt == "table":
        from traces.importers.table import iter_table

        return iter_table(src, model, chunk_tokens)
    if fmt == "sglang-dump":
        from traces.importers.sglang_dump import iter_sglang_dump

        ranks = options.get("ranks")
        return iter_sglang_dump(src, model, chunk_tokens, ranks if isinstance(ranks, int) else None)
    if fmt in ("sglang-routed", "vllm-routed"):
        import numpy as np

        from traces.importers.api_responses import iter_api_responses

        pmap = options.get("physical_map")
        return iter_api_responses(
            fmt, src, model, chunk_tokens, pmap if isinstance(pmap, np.ndarray) else None
        )
    if fmt == "trtllm":
        from traces.importers.trtllm import iter_trtllm_raw

        return iter_trtllm_raw(src, model, chunk_tokens)
    if fmt == "megatron":
        from traces.importers.megatron import iter_megatron

        return iter_megatron(src, model, chunk_tokens)
    from traces.importers.topk_parquet import iter_topk_parquet

    ic, sc = options.get("indices_column"), options.get("scores_column")
    return iter_topk_parquet(
        src,
        model,
        chunk_tokens,
        indices_column=ic if isinstance(ic, str) else None,
        scores_column=sc if isinstance(sc, str) else None,
    )


def import_load_stats(fmt: str, source: str | os.PathLike[str], model: ModelSpec | None):  # noqa: ANN201
    """Load statistics from a count-holding ``source`` (see :data:`COUNT_FORMATS`)."""
    from traces.load_stats import read_sglang_logical_count

    src = Path(source)
    if fmt == "sglang":
        return read_sglang_logical_count(src, model)
    if model is None:
        raise InputError(f"format {fmt!r} does not say which model it is: pass --model")
    if fmt == "sglang-dump":
        from traces.importers.sglang_dump import read_sglang_dump_counts

        return read_sglang_dump_counts(src, model)
    if fmt == "trtllm":
        from traces.importers.trtllm import read_trtllm_counts

        return read_trtllm_counts(src, model)
    raise InputError(f"format {fmt!r} holds tokens, not counts")


__all__ = [
    "COUNT_FORMATS", "TRACE_FORMATS", "holds_counts", "import_load_stats", "import_trace",
    "iter_esft", "iter_table", "iter_vllm",
]
