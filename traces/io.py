"""The native trace format: Parquet, one row per token, chunked in row groups.

Columns
    ``seq_id`` (int64), ``position`` (int32), optional ``origin_gpu`` and ``step`` (int32), then
    one column ``experts_L<layer>`` per MoE layer holding a fixed-size list of ``top_k`` expert
    ids in the smallest unsigned type that fits, and optional ``gates_L<layer>`` (float32 lists).
Metadata
    :class:`~traces.trace.TraceMeta` as JSON under the schema metadata key ``moe_netsim.trace``.

Writing goes to a temporary file renamed into place on success, so a crash never leaves a
file that looks complete.  Reading streams one row group (or smaller batch) at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.trace import RoutingTrace, TraceMeta, expert_dtype

META_KEY = b"moe_netsim.trace"
# What pyarrow raises on a damaged file (ArrowInvalid is a ValueError; bad bytes in names give
# UnicodeDecodeError); InputError is re-raised before these are caught.
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)
DEFAULT_ROW_GROUP_TOKENS = 65_536


def _schema(meta: TraceMeta, has_origin: bool, has_step: bool, has_gates: bool) -> pa.Schema:
    m = meta.model
    id_type = pa.from_numpy_dtype(expert_dtype(m.num_routed_experts))
    fields = [pa.field("seq_id", pa.int64()), pa.field("position", pa.int32())]
    if has_origin:
        fields.append(pa.field("origin_gpu", pa.int32()))
    if has_step:
        fields.append(pa.field("step", pa.int32()))
    for layer in m.moe_layer_indices:
        fields.append(pa.field(f"experts_L{layer}", pa.list_(id_type, m.top_k)))
    if has_gates:
        for layer in m.moe_layer_indices:
            fields.append(pa.field(f"gates_L{layer}", pa.list_(pa.float32(), m.top_k)))
    return pa.schema(fields, metadata={META_KEY: meta.to_json().encode()})


def _to_table(block: RoutingTrace, schema: pa.Schema) -> pa.Table:
    m = block.model
    k = m.top_k
    cols: list[pa.Array] = [
        pa.array(block.seq_id.astype(np.int64, copy=False)),
        pa.array(block.position.astype(np.int32, copy=False)),
    ]
    if "origin_gpu" in schema.names:
        if block.origin_gpu is None:
            raise InputError("trace writer: this file records origin_gpu but a block lacks it")
        cols.append(pa.array(block.origin_gpu.astype(np.int32, copy=False)))
    if "step" in schema.names:
        if block.step is None:
            raise InputError("trace writer: this file records step but a block lacks it")
        cols.append(pa.array(block.step.astype(np.int32, copy=False)))
    ids = block.experts.astype(expert_dtype(m.num_routed_experts), copy=False)
    for li in range(m.num_moe_layers):
        flat = np.ascontiguousarray(ids[:, li, :]).reshape(-1)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), k))
    if f"gates_L{m.moe_layer_indices[0]}" in schema.names:
        if block.gates is None:
            raise InputError("trace writer: this file records gates but a block lacks them")
        g = block.gates.astype(np.float32, copy=False)
        for li in range(m.num_moe_layers):
            flat = np.ascontiguousarray(g[:, li, :]).reshape(-1)
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), k))
    return pa.Table.from_arrays(cols, schema=schema)


class TraceWriter:
    """Write a trace block by block; the file appears only when the writer closes cleanly.

    >>> # with TraceWriter(path, meta) as w: w.write(block)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: TraceMeta,
        *,
        has_origin: bool = True,
        has_step: bool = True,
        has_gates: bool = False,
        row_group_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    ) -> None:
        self.path = Path(path)
        self.meta = meta
        self._output: contextlib.AbstractContextManager[Path] | None = None
        self._schema = _schema(meta, has_origin, has_step, has_gates)
        self._row_group_tokens = row_group_tokens
        self._writer: pq.ParquetWriter | None = None
        self.num_tokens = 0

    def __enter__(self) -> TraceWriter:
        self._output = atomic_output(self.path)
        tmp = self._output.__enter__()
        try:
            self._writer = pq.ParquetWriter(tmp, self._schema, compression="zstd")
        except BaseException:
            self._output.__exit__(*sys.exc_info())
            raise
        return self

    def write(self, block: RoutingTrace) -> None:
        if self._writer is None:
            raise RuntimeError("TraceWriter used outside its with-block")
        if block.model != self.meta.model:
            raise InputError("trace writer: block model differs from the file's model")
        if block.num_tokens == 0:
            return
        self._writer.write_table(_to_table(block, self._schema), self._row_group_tokens)
        self.num_tokens += block.num_tokens

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is None or self._output is None:
            raise RuntimeError("TraceWriter closed without being opened")
        try:
            self._writer.close()
        except BaseException:
            if not self._output.__exit__(*sys.exc_info()):
                raise
            return
        self._output.__exit__(exc_type, exc, tb)


def write_trace(
    path: str | os.PathLike[str],
    trace: RoutingTrace,
    row_group_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> Path:
    """Write a whole in-memory trace in the native format (atomically)."""
    write_blocks(path, [trace], row_group_tokens)
    return Path(path)


def write_blocks(
    path: str | os.PathLike[str],
    blocks: Iterable[RoutingTrace],
    row_group_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> int:
    """Write blocks to one trace file atomically; return the token count.

    The optional columns (origin, step, gates) are taken from the first block.  A trace
    without any block is refused; on any error no file is left behind.
    """
    it = iter(blocks)
    first = next(it, None)
    if first is None:
        raise InputError(f"{path}: no tokens to write; nothing written")
    with TraceWriter(
        path,
        first.meta,
        has_origin=first.origin_gpu is not None,
        has_step=first.step is not None,
        has_gates=first.gates is not None,
        row_group_tokens=row_group_tokens,
    ) as w:
        for block in itertools.chain([first], it):
            w.write(block)
        return w.num_tokens


def open_parquet(path: str | os.PathLike[str], what: str) -> pq.ParquetFile:
    """Open a Parquet file; a missing or unreadable file is an :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file not found")
    try:
        pf = pq.ParquetFile(p)
        pf.schema_arrow  # noqa: B018 - decoding the schema is part of "readable"
        return pf
    except _READ_ERRORS as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{p}: not a readable Parquet {what} ({detail})") from None


def _open(path: str | os.PathLike[str]) -> tuple[pq.ParquetFile, TraceMeta]:
    p = Path(path)
    pf = open_parquet(p, "trace")
    md = pf.schema_arrow.metadata or {}
    if META_KEY not in md:
        raise InputError(f"{p}: Parquet file has no moe-netsim trace metadata")
    try:
        text = md[META_KEY].decode()
    except UnicodeDecodeError:
        raise InputError(f"{p}: trace metadata is not UTF-8 text") from None
    meta = TraceMeta.from_json(text, where=str(p))
    names = set(pf.schema_arrow.names)
    for layer in meta.model.moe_layer_indices:
        if f"experts_L{layer}" not in names:
            raise InputError(f"{p}: column experts_L{layer} missing for MoE layer {layer}")
    _check_column_types(pf.schema_arrow, meta, str(p))
    return pf, meta


def _check_column_types(schema: pa.Schema, meta: TraceMeta, where: str) -> None:
    """Reject columns whose Arrow type cannot hold what the format says (no silent casts)."""
    k = meta.model.top_k
    for f in schema:
        t = f.type
        if f.name in ("seq_id", "position", "origin_gpu", "step"):
            if not pa.types.is_integer(t):
                raise InputError(f"{where}: column {f.name} must hold integers, got {t}")
        elif f.name.startswith(("experts_L", "gates_L")):
            experts = f.name.startswith("experts_L")
            is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
            is_list = is_list or pa.types.is_fixed_size_list(t)
            value_ok = is_list and (
                pa.types.is_integer(t.value_type) if experts else pa.types.is_floating(t.value_type)
            )
            if not value_ok:
                want = "integer expert ids" if experts else "float gate weights"
                raise InputError(
                    f"{where}: column {f.name} must hold lists of {k} {want}, got {t}"
                )
            if pa.types.is_fixed_size_list(t) and t.list_size != k:
                raise InputError(
                    f"{where}: column {f.name} holds lists of {t.list_size}, but the model's"
                    f" top_k is {k}: each token needs {k} expert ids"
                )


def read_trace_meta(path: str | os.PathLike[str]) -> tuple[TraceMeta, int]:
    """The metadata and token count of a trace file, without reading its rows."""
    pf, meta = _open(path)
    return meta, int(pf.metadata.num_rows)


def _may_leave_range(stored: np.dtype, num_experts: int) -> bool:
    """Whether ids of the stored integer type can fall outside ``0..num_experts-1`` (the
    checks of :func:`traces.trace.find_bad_route` still run on every block)."""
    info = np.iinfo(stored)
    return info.min < 0 or info.max >= num_experts


def _from_batch(batch: pa.RecordBatch, meta: TraceMeta, where: str) -> RoutingTrace:
    m = meta.model
    k = m.top_k
    n = batch.num_rows
    names = batch.schema.names

    def fixed(col: str) -> np.ndarray:
        """[n, k] values of a list column in their stored type (checked before any cast)."""
        arr = batch.column(names.index(col))
        values = arr.flatten()
        if arr.null_count or values.null_count:
            raise InputError(f"{where}: column {col} has missing values")
        if not pa.types.is_fixed_size_list(arr.type):  # fixed sizes were checked on open
            lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            if (lengths != k).any():
                row = int(np.flatnonzero(lengths != k)[0])
                raise InputError(
                    f"{where}: row {row}: column {col} holds {int(lengths[row])} values, the"
                    f" model's top_k needs {k} expert ids per token"
                )
        return values.to_numpy(zero_copy_only=False).reshape(n, k)

    def plain(col: str, dtype: type) -> np.ndarray | None:
        if col not in names:
            return None
        arr = batch.column(names.index(col))
        if arr.null_count:
            raise InputError(f"{where}: column {col} has missing values")
        values = arr.to_numpy(zero_copy_only=False)
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise InputError(f"{where}: column {col} holds values outside the {info.dtype} range")
        return np.asarray(values, dtype=dtype)

    id_dtype = expert_dtype(m.num_routed_experts)
    # layer-major in memory (the [tokens, layers, k] array is a transposed view): the replays
    # and the writer take one layer at a time, and each layer is then contiguous
    by_layer = np.empty((m.num_moe_layers, n, k), dtype=id_dtype)
    for li, layer in enumerate(m.moe_layer_indices):
        ids = fixed(f"experts_L{layer}")  # range-checked in the stored type, then narrowed
        if _may_leave_range(ids.dtype, m.num_routed_experts) and ids.size and (
                ids.min() < 0 or ids.max() >= m.num_routed_experts):
            bad = (ids < 0) | (ids >= m.num_routed_experts)
            t = int(np.argwhere(bad)[0][0])
            raise InputError(
                f"{where}: row {t}, MoE layer {layer}: expert id {int(ids[bad][0])} out of range"
                f" 0..{m.num_routed_experts - 1}"
            )
        by_layer[li] = ids
    experts = by_layer.transpose(1, 0, 2)
    gates = None
    if f"gates_L{m.moe_layer_indices[0]}" in names:
        gates = np.empty((n, m.num_moe_layers, k), dtype=np.float32)
        for li, layer in enumerate(m.moe_layer_indices):
            gates[:, li, :] = fixed(f"gates_L{layer}")
    seq_id = plain("seq_id", np.int64)
    position = plain("position", np.int32)
    if seq_id is None or position is None:
        raise InputError(f"{where}: columns seq_id and position are required")
    try:
        return RoutingTrace(
            meta=meta,
            experts=experts,
            seq_id=seq_id,
            position=position,
            origin_gpu=plain("origin_gpu", np.int32),
            step=plain("step", np.int32),
            gates=gates,
        )
    except InputError as exc:
        raise InputError(f"{where}: {str(exc).removeprefix('trace: ')}") from None


def iter_trace(
    path: str | os.PathLike[str], chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS
) -> Iterator[RoutingTrace]:
    """Stream a trace file as blocks of at most ``chunk_tokens`` tokens (bounded memory).

    Row groups are read one at a time (Arrow's batch iterator reads ahead several row groups
    and peaks at about three times the memory); a row group much larger than ``chunk_tokens``
    (a file from another writer) is read in batches instead.
    """
    if chunk_tokens < 1:
        raise InputError("chunk size must be at least one token")
    pf, meta = _open(path)
    start = 0
    try:
        for i in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(i).num_rows
            if rows > 4 * max(chunk_tokens, DEFAULT_ROW_GROUP_TOKENS):
                batches: Iterable[pa.RecordBatch] = pf.iter_batches(
                    batch_size=chunk_tokens, row_groups=[i]
                )
            else:
                batches = pf.read_row_group(i).to_batches(max_chunksize=chunk_tokens)
            for batch in batches:
                block = _from_batch(batch, meta, f"{path} (rows from {start})")
                start += batch.num_rows
                yield block
    except InputError:
        raise
    except _READ_ERRORS as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{path}: trace file is truncated or corrupt ({detail})") from None


def read_trace(path: str | os.PathLike[str]) -> RoutingTrace:
    """Read a whole trace into memory."""
    _, meta = _open(path)
    blocks = list(iter_trace(path))
    if not blocks:
        return RoutingTrace(
            meta=meta,
            experts=np.zeros(
                (0, meta.model.num_moe_layers, meta.model.top_k),
                expert_dtype(meta.model.num_routed_experts),
            ),
            seq_id=np.zeros(0, np.int64),
            position=np.zeros(0, np.int32),
        )
    return concat_traces(blocks)


def concat_traces(blocks: list[RoutingTrace]) -> RoutingTrace:
    """Join blocks of one trace (same metadata and optional columns) into one."""
    first = blocks[0]

    def cat(name: str) -> np.ndarray | None:
        parts = [getattr(b, name) for b in blocks]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts)

    return RoutingTrace(
        meta=first.meta,
        experts=layer_major_concat([b.experts for b in blocks]),
        seq_id=np.concatenate([b.seq_id for b in blocks]),
        position=np.concatenate([b.position for b in blocks]),
        origin_gpu=cat("origin_gpu"),
        step=cat("step"),
        gates=cat("gates"),
    )


def layer_major_concat(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` of [tokens, layers, k] arrays, laid out layer-major in memory
    as the reader lays out its blocks (each layer's [tokens, k] contiguous)."""
    return np.concatenate([p.transpose(1, 0, 2) for p in parts], axis=1).transpose(1, 0, 2)
