"""Public per-token routing data sets stored as Parquet of top-k indices (and scores).

Two layouts, recognised by the type of the indices column:

- *wide*, one row per token: the indices column is ``list<list<int>>`` [MoE layers][top_k]
  (scores, if present, ``list<list<float>>`` of the same shape);
- *long*, one row per (token, layer): the indices column is ``list<int>`` [top_k] beside an
  integer ``layer`` column (a transformer layer index of the model, or 0..L-1); the rows of one
  token are consecutive, in layer order.

Column names are looked up from common spellings (first present wins) unless given:
indices ``topk_indices, topk_ids, expert_indices, expert_ids, experts, routed_experts``;
scores ``topk_scores, topk_weights, scores, weights, gates``; sequence ``seq_id,
sequence_id, sample_id, request_id, doc_id``; position ``position, pos, token_position,
token_idx``.  Without a sequence column the whole file is one sequence; without a position
column positions count tokens within each sequence.  Read in record batches (bounded memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from traces.importers.common import BlockBuilder, check_routes
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS, open_parquet
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta

INDEX_NAMES = (
    "topk_indices",
    "topk_ids",
    "expert_indices",
    "expert_ids",
    "experts",
    "routed_experts",
)
SCORE_NAMES = ("topk_scores", "topk_weights", "scores", "weights", "gates")
SEQ_NAMES = ("seq_id", "sequence_id", "sample_id", "request_id", "doc_id")
POS_NAMES = ("position", "pos", "token_position", "token_idx")


def _pick(
    names: list[str], candidates: tuple[str, ...], given: str | None, what: str, where: str
) -> str | None:
    if given is not None:
        if given not in names:
            raise InputError(f"{where}: no column {given!r} for the {what} (columns: {names})")
        return given
    return next((c for c in candidates if c in names), None)


def _fixed(col: pa.Array, depth: int, where: str, name: str) -> np.ndarray:
    """Nested list column of fixed inner sizes as a NumPy array [rows, ...]."""
    arr = col
    sizes = []
    for _ in range(depth):
        if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
            raise InputError(f"{where}: column {name!r} is not a list column of depth {depth}")
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise InputError(f"{where}: column {name!r} has rows of different lengths")
        sizes.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False)
    return values.reshape(len(col), *sizes)


def iter_topk_parquet(
    source: str | Path,
    model: ModelSpec,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    indices_column: str | None = None,
    scores_column: str | None = None,
) -> Iterator[RoutingTrace]:
    source = Path(source)
    pf = open_parquet(source, "routing data set")
    names = pf.schema_arrow.names
    where = str(source)
    idx = _pick(names, INDEX_NAMES, indices_column, "top-k indices", where)
    if idx is None:
        raise InputError(f"{where}: no top-k indices column (tried {', '.join(INDEX_NAMES)})")
    scores = _pick(names, SCORE_NAMES, scores_column, "scores", where)
    seq_col = _pick(names, SEQ_NAMES, None, "sequence", where)
    pos_col = _pick(names, POS_NAMES, None, "position", where)
    t = pf.schema_arrow.field(idx).type
    wide = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_list(t.value_type)
    if not wide and "layer" not in names:
        raise InputError(f"{where}: {idx!r} is one list per row but there is no 'layer' column")
    meta = TraceMeta(
        model=model,
        source=f"top-k Parquet {source}",
        produced_by="moe-netsim trace import --format topk-parquet",
    )
    builder = BlockBuilder(meta, chunk_tokens)
    columns = [c for c in (idx, scores, seq_col, pos_col, None if wide else "layer") if c]
    L = model.num_moe_layers
    state: dict[str, Any] = {"seq": None, "pos": 0, "tokens": 0}
    rows_per_token = 1 if wide else L
    carry: pa.RecordBatch | None = None
    for batch in pf.iter_batches(
        batch_size=max(rows_per_token, chunk_tokens * rows_per_token), columns=columns
    ):
        if carry is not None:
            batch = pa.Table.from_batches([carry, batch]).combine_chunks().to_batches()[0]
        usable = (batch.num_rows // rows_per_token) * rows_per_token
        carry = batch.slice(usable) if usable < batch.num_rows else None
        if usable:
            yield from _emit(
                builder,
                batch.slice(0, usable),
                idx,
                scores,
                seq_col,
                pos_col,
                wide,
                model,
                where,
                state,
            )
    if carry is not None and carry.num_rows:
        raise InputError(
            f"{where}: {carry.num_rows} trailing rows do not form a whole token of {L} layers"
        )
    if state["tokens"] == 0:
        raise InputError(f"{where}: the data set holds no tokens")
    yield from builder.finish()


def _emit(builder, batch, idx, scores, seq_col, pos_col, wide, model, where, state):  # noqa: ANN001, ANN202
    L, k = model.num_moe_layers, model.top_k
    col = batch.column(idx)
    if wide:
        experts = _fixed(col, 2, where, idx)
        gates = _fixed(batch.column(scores), 2, where, scores) if scores else None
    else:
        layer = batch.column("layer").to_numpy(zero_copy_only=False).reshape(-1, L)
        ok_moe = (layer == np.asarray(model.moe_layer_indices)).all(axis=1)
        ok_pos = (layer == np.arange(L)).all(axis=1)
        if not (ok_moe | ok_pos).all():
            bad = int(np.flatnonzero(~(ok_moe | ok_pos))[0]) + state["tokens"]
            raise InputError(
                f"{where}: token {bad}: its rows' layers are not the model's {L} MoE layers"
                " in order"
            )
        flat = _fixed(col, 1, where, idx)
        experts = flat.reshape(-1, L, flat.shape[1])
        gates = (
            _fixed(batch.column(scores), 1, where, scores).reshape(experts.shape)
            if scores
            else None
        )
    n = experts.shape[0]
    if experts.shape[1:] != (L, k):
        raise InputError(
            f"{where}: indices of shape [tokens, {', '.join(map(str, experts.shape[1:]))}],"
            f" expected [{L} MoE layers, top_k={k}] for {model.name!r}"
        )
    if not np.issubdtype(experts.dtype, np.integer):
        raise InputError(f"{where}: column {idx!r} must hold integers")
    step_rows = 1 if wide else L
    check_routes(experts.astype(np.int64), model, where, first_token=state["tokens"])
    seq = (
        batch.column(seq_col).to_numpy(zero_copy_only=False)[::step_rows].astype(np.int64)
        if seq_col
        else np.zeros(n, dtype=np.int64)
    )
    if pos_col:
        pos = batch.column(pos_col).to_numpy(zero_copy_only=False)[::step_rows].astype(np.int32)
    else:
        pos = np.empty(n, dtype=np.int32)
        for i in range(n):  # running position within each sequence, across batches
            if seq[i] != state["seq"]:
                state["seq"], state["pos"] = seq[i], 0
            pos[i] = state["pos"]
            state["pos"] += 1
    state["tokens"] += n
    yield from builder.add(experts.astype(np.int64), seq_id=seq, position=pos, gates=gates)


def write_topk_parquet(blocks: Iterator[RoutingTrace], path: Path) -> int:
    """Wide layout: ``seq_id``, ``position``, ``topk_indices`` [layers][k] (+ ``topk_scores``)."""
    count = 0
    writer: pq.ParquetWriter | None = None
    with atomic_output(path) as tmp:
        try:
            for b in blocks:
                cols = {
                    "seq_id": pa.array(b.seq_id),
                    "position": pa.array(b.position),
                    "topk_indices": pa.array(b.experts.astype(np.int64).tolist()),
                }
                if b.gates is not None:
                    cols["topk_scores"] = pa.array(b.gates.astype(np.float32).tolist())
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                count += b.num_tokens
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InputError(f"{path}: the trace holds no tokens; nothing written")
    return count
