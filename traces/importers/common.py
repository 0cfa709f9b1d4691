"""What every importer shares: collecting parts into blocks and writing them atomically."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from traces.importers.formats import TRACE_FORMATS
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS, write_blocks
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, expert_dtype, find_bad_route


class BlockBuilder:
    """Collects per-sequence parts and cuts them into blocks of about ``chunk_tokens`` tokens."""

    def __init__(self, meta: TraceMeta, chunk_tokens: int) -> None:
        if chunk_tokens < 1:
            raise InputError("chunk size must be at least one token")
        self.meta = meta
        self.chunk_tokens = chunk_tokens
        self._parts: list[dict[str, np.ndarray | None]] = []
        self._tokens = 0

    def add(
        self,
        experts: np.ndarray,
        seq_id: np.ndarray,
        position: np.ndarray,
        gates: np.ndarray | None = None,
        origin_gpu: np.ndarray | None = None,
        step: np.ndarray | None = None,
    ) -> Iterator[RoutingTrace]:
        """Add tokens (already validated by the caller); yield every block that is full."""
        self._parts.append(
            {
                "experts": experts.astype(expert_dtype(self.meta.model.num_routed_experts)),
                "seq_id": seq_id.astype(np.int64, copy=False),
                "position": position.astype(np.int32, copy=False),
                "gates": None if gates is None else gates.astype(np.float32, copy=False),
                "origin_gpu": None if origin_gpu is None else origin_gpu.astype(np.int32),
                "step": None if step is None else step.astype(np.int32),
            }
        )
        self._tokens += len(seq_id)
        if self._tokens >= self.chunk_tokens:
            yield self._flush()

    def finish(self) -> Iterator[RoutingTrace]:
        if self._tokens:
            yield self._flush()

    def _flush(self) -> RoutingTrace:
        def cat(name: str) -> np.ndarray | None:
            parts = [p[name] for p in self._parts]
            return None if parts[0] is None else np.concatenate(parts)  # type: ignore[arg-type]

        block = RoutingTrace(
            meta=self.meta,
            experts=cat("experts"),  # type: ignore[arg-type]
            seq_id=cat("seq_id"),  # type: ignore[arg-type]
            position=cat("position"),  # type: ignore[arg-type]
            origin_gpu=cat("origin_gpu"),
            step=cat("step"),
            gates=cat("gates"),
        )
        self._parts, self._tokens = [], 0
        return block


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
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    options: dict[str, object] | None = None,
    observe: Callable[[Iterator[RoutingTrace]], Iterator[RoutingTrace]] | None = None,
) -> int:
    """Import ``source`` in format ``fmt`` (see :data:`TRACE_FORMATS`) to the trace file ``out``.

    ``options``: ``ranks`` (sglang-dump: the ranks the dump must hold), ``physical_map``
    (sglang-routed, vllm-routed: [layers, P] physical_to_logical_map when ids are physical),
    ``indices_column`` / ``scores_column`` (topk-parquet).  ``observe`` wraps the stream of
    blocks on their way to the file (a progress bar).
    """
    from traces.importers.esft import iter_esft

    src = Path(source)
    if fmt not in TRACE_FORMATS:
        raise InputError(f"unknown trace format {fmt!r}; known: {', '.join(sorted(TRACE_FORMATS))}")
    if fmt == "esft":
        blocks = iter_esft(src, model, chunk_tokens)
    elif model is None:
        raise InputError(f"format {fmt!r} does not say which model it is: pass --model")
    else:
        blocks = _blocks(fmt, src, model, chunk_tokens, options or {})
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


def check_routes(experts: np.ndarray, model: ModelSpec, where: str, first_token: int = 0) -> None:
    """Raise naming ``where``, the token and the MoE layer of the first bad id in ``experts``."""
    bad = find_bad_route(experts, model.num_routed_experts)
    if bad is not None:
        t, li, what = bad
        raise InputError(
            f"{where}: token {first_token + t}, MoE layer {model.moe_layer_indices[li]}: {what}"
        )


def sequence_runs(blocks: Iterator[RoutingTrace]) -> Iterator[tuple[int, np.ndarray, ModelSpec]]:
    """(seq_id, experts, model) per run of one sequence, joined across block boundaries."""
    pending: tuple[int, list[np.ndarray], ModelSpec] | None = None
    for b in blocks:
        seq = b.seq_id
        starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
        for a, z in zip(starts, np.r_[starts[1:], len(seq)], strict=True):
            sid = int(seq[a])
            if pending is not None and pending[0] == sid:
                pending[1].append(b.experts[a:z])
                continue
            if pending is not None:
                yield pending[0], np.concatenate(pending[1]), pending[2]
            pending = (sid, [b.experts[a:z]], b.meta.model)
    if pending is not None:
        yield pending[0], np.concatenate(pending[1]), pending[2]
