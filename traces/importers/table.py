"""A long routing table, CSV or Parquet: one row per (token, MoE layer, rank).

Required columns: ``token`` (global token number), ``layer`` (transformer layer index, one of
the model's MoE layers), ``rank`` (0..top_k-1), ``expert`` (routed expert id).  Optional:
``seq_id``, ``position``, ``origin_gpu``, ``step`` (per token: equal on all its rows) and
``gate`` (per row).  Rows must be grouped by token with token numbers non-decreasing (sort the
table by token); then the table is read in batches and memory stays bounded.  Without
``seq_id`` every token is its own sequence (``seq_id`` = token, ``position`` = 0).

Errors name the CSV line (the header is line 1) or the Parquet row (counted from 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from traces.importers.common import BlockBuilder
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, find_bad_route

REQUIRED = ("token", "layer", "rank", "expert")
PER_TOKEN = ("seq_id", "position", "origin_gpu", "step")
COLUMNS = REQUIRED + PER_TOKEN + ("gate",)
BATCH_ROWS = 1 << 20


class _Rows:
    """Locations in the input: CSV lines or Parquet rows."""

    def __init__(self, path: Path, csv: bool) -> None:
        self.path, self.csv = path, csv

    def __call__(self, row: int) -> str:
        return f"{self.path}, line {row + 2}" if self.csv else f"{self.path}, row {row}"


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            header = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))
            names = header.schema.names
            _check_columns(path, names)
            types = {c: (pa.float64() if c == "gate" else pa.int64()) for c in names}
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 24),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
            yield from reader
        elif name.endswith((".parquet", ".pq")):
            pf = pq.ParquetFile(path)
            _check_columns(path, pf.schema_arrow.names)
            for c in pf.schema_arrow.names:
                t = pf.schema_arrow.field(c).type
                ok = pa.types.is_floating(t) if c == "gate" else pa.types.is_integer(t)
                if not ok:
                    kind = "floats" if c == "gate" else "integers"
                    raise InputError(f"{path}: column {c!r} has type {t}; it must hold {kind}")
            yield from pf.iter_batches(batch_size=BATCH_ROWS)
        else:
            raise InputError(f"{path}: expected a .csv, .csv.gz or .parquet routing table")
    except (pa.ArrowInvalid, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: cannot read the table ({msg})") from None


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(
            f"{path}: column(s) {', '.join(missing)} missing; required: {', '.join(REQUIRED)}"
        )
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise InputError(
            f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}"
        )


def _columns(batch: pa.RecordBatch, first_row: int, rows: _Rows) -> dict[str, np.ndarray]:
    out = {}
    for c in batch.schema.names:
        arr = batch.column(batch.schema.get_field_index(c))
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{rows(first_row + i)}: column {c!r} is empty")
        v = arr.to_numpy(zero_copy_only=False)
        out[c] = v.astype(np.float64 if c == "gate" else np.int64, copy=False)
    return out


def iter_table(
    path: str | Path,
    model: ModelSpec,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> Iterator[RoutingTrace]:
    """Stream a long routing table as trace blocks (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: routing table not found")
    rows = _Rows(path, path.name.lower().endswith((".csv", ".csv.gz")))
    meta = TraceMeta(
        model=model,
        source=f"routing table {path}",
        produced_by="moe-netsim trace import --format table",
    )
    lut = np.full(max(model.moe_layer_indices) + 1, -1, dtype=np.int64)
    lut[list(model.moe_layer_indices)] = np.arange(model.num_moe_layers)
    builder = BlockBuilder(meta, chunk_tokens)
    carry: dict[str, np.ndarray] | None = None
    carry_row = 0  # input row of carry's first row
    next_row = 0
    for batch in _batches(path):
        cols = _columns(batch, next_row, rows)
        next_row += batch.num_rows
        if carry is not None:
            cols = {c: np.concatenate([carry[c], cols[c]]) for c in cols}
        else:
            carry_row = next_row - batch.num_rows
        tok = cols["token"]
        if tok.size == 0:
            carry = None
            continue
        starts = np.flatnonzero(np.diff(tok)) + 1
        cut = int(starts[-1]) if starts.size else 0  # the last token may continue
        if cut:
            done = {c: v[:cut] for c, v in cols.items()}
            yield from _emit(done, carry_row, model, lut, rows, builder)
        carry = {c: v[cut:] for c, v in cols.items()}
        carry_row += cut
    if carry is None or carry["token"].size == 0:
        raise InputError(f"{path}: the table has no rows")
    yield from _emit(carry, carry_row, model, lut, rows, builder)
    yield from builder.finish()


def _emit(
    cols: dict[str, np.ndarray],
    first_row: int,
    model: ModelSpec,
    lut: np.ndarray,
    rows: _Rows,
    builder: BlockBuilder,
) -> Iterator[RoutingTrace]:
    """Turn rows of whole tokens into trace parts; every check names the input row."""
    L, k = model.num_moe_layers, model.top_k
    tok = cols["token"]
    starts, sizes = _token_rows(tok, first_row, L, k, rows)
    layer = cols["layer"]
    li = np.where((layer >= 0) & (layer < lut.size), lut[np.clip(layer, 0, lut.size - 1)], -1)
    _check_ranges(cols, li, first_row, model, rows)
    n = starts.size
    group = np.repeat(np.arange(n), sizes)
    key = (group * L + li) * k + cols["rank"]
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if dup.size:
        i = int(order[dup[0] + 1])
        raise InputError(
            f"{rows(first_row + i)}: token {tok[i]}, MoE layer {layer[i]}, rank"
            f" {cols['rank'][i]} appears twice"
        )
    flat_ids = np.empty(n * L * k, dtype=np.int64)
    flat_ids[key] = cols["expert"]
    experts = flat_ids.reshape(n, L, k)
    bad = find_bad_route(experts, model.num_routed_experts)
    if bad is not None:
        g, l_, what = bad
        raise InputError(
            f"{rows(first_row + int(starts[g]))}: token {tok[starts[g]]}, MoE layer"
            f" {model.moe_layer_indices[l_]}: {what}"
        )
    per_token = _per_token_columns(cols, starts, sizes, group, first_row, rows)
    gates = None
    if "gate" in cols:
        gv = cols["gate"]
        if not np.isfinite(gv).all():
            i = int(np.flatnonzero(~np.isfinite(gv))[0])
            raise InputError(f"{rows(first_row + i)}: token {tok[i]}: gate {gv[i]} is not finite")
        flat_gates = np.empty(n * L * k, dtype=np.float32)
        flat_gates[key] = gv
        gates = flat_gates.reshape(n, L, k)
    token_ids = tok[starts]
    yield from builder.add(
        experts,
        seq_id=per_token.get("seq_id", token_ids),
        position=per_token.get("position", np.zeros(n, dtype=np.int32)),
        gates=gates,
        origin_gpu=per_token.get("origin_gpu"),
        step=per_token.get("step"),
    )


def _token_rows(tok: np.ndarray, first_row: int, L: int, k: int, rows: _Rows
                ) -> tuple[np.ndarray, np.ndarray]:
    """First row and row count of each token: tokens in increasing order, L x k rows each."""
    step = np.diff(tok)
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0]) + 1
        raise InputError(
            f"{rows(first_row + i)}: token {tok[i]} follows token {tok[i - 1]}; rows must be"
            " grouped by token in increasing order (sort the table by token)"
        )
    starts = np.concatenate([[0], np.flatnonzero(step) + 1])
    sizes = np.diff(np.append(starts, tok.size))
    if (sizes != L * k).any():
        g = int(np.flatnonzero(sizes != L * k)[0])
        raise InputError(
            f"{rows(first_row + int(starts[g]))}: token {tok[starts[g]]} has {sizes[g]} rows,"
            f" expected {L * k} (one per MoE layer and rank: {L} layers x top_k={k})"
        )
    return starts, sizes


def _check_ranges(cols: dict[str, np.ndarray], li: np.ndarray, first_row: int,
                  model: ModelSpec, rows: _Rows) -> None:
    """Layer (``li``: its MoE index, -1 for none), rank and expert of every row in range."""
    k, tok = model.top_k, cols["token"]
    for name, val, ok in (
        ("layer", cols["layer"], li >= 0),
        ("rank", cols["rank"], (cols["rank"] >= 0) & (cols["rank"] < k)),
        (
            "expert",
            cols["expert"],
            (cols["expert"] >= 0) & (cols["expert"] < model.num_routed_experts),
        ),
    ):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            allowed = {
                "layer": f"the MoE layers of {model.name!r}"
                f" ({model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]})",
                "rank": f"0..{k - 1}",
                "expert": f"0..{model.num_routed_experts - 1}",
            }[name]
            raise InputError(
                f"{rows(first_row + i)}: token {tok[i]}: {name} {val[i]} out of range; must be"
                f" {allowed}"
            )


def _per_token_columns(cols: dict[str, np.ndarray], starts: np.ndarray, sizes: np.ndarray,
                       group: np.ndarray, first_row: int, rows: _Rows) -> dict[str, np.ndarray]:
    """The per-token columns present, one value per token (equal on all its rows)."""
    tok = cols["token"]
    per_token: dict[str, np.ndarray] = {}
    for c in PER_TOKEN:
        if c not in cols:
            continue
        v = cols[c]
        first = v[starts]
        diff = v != np.repeat(first, sizes)
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            raise InputError(
                f"{rows(first_row + i)}: token {tok[i]}: {c} {v[i]} differs from {first[group[i]]}"
                f" on the token's first row; {c} must be equal on all rows of a token"
            )
        if c in ("position", "origin_gpu", "step") and (first < 0).any():
            g = int(np.flatnonzero(first < 0)[0])
            raise InputError(
                f"{rows(first_row + int(starts[g]))}: token {tok[starts[g]]}: {c} {first[g]}"
                " is negative"
            )
        per_token[c] = first
    return per_token
