"""SGLang's expert distribution recorder dumps (``/dump_expert_distribution_record``).

Follows SGLang's ``srt/eplb/expert_distribution.py`` (main branch, 2026): with
``--expert-distribution-recorder-mode`` each rank writes
``expert_distribution_recorder_<time>_<rank>.pt`` (``torch.save``) into
``SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR``:

- ``per_token``: ``{"records": [...], "last_physical_to_logical_map": [layers, P]}``, one record
  per forward pass with ``forward_pass_id``, ``rank``, ``gatherer_key``, ``input_ids``,
  ``positions``, ``extend_seq_lens`` (None in decode), ``forward_mode`` and
  ``topk_ids_of_layer`` [transformer layers, tokens, 8] in **physical** expert ids (-1 unused).
  Imported as a trace: origin = the rank (with DP attention a rank serves its own tokens),
  step = the forward pass, ids mapped to logical with the recorded map.  Each extend span of a
  pass is a sequence; each decode token is a sequence of its own (the dump records no request
  ids), numbered in the order read.
- ``per_pass``: the same records with ``global_physical_count`` [layers, P] instead of tokens;
- ``stat``: rank 0 writes ``{"logical_count": [buffer, layers, experts], ...}``.
  Both are counts: they become load statistics.

A folder is read as one dump: every rank 0..N-1 must be present.  Two-batch-overlap runs
(``gatherer_key`` other than ``primary``) are refused: SGLang's per-token gatherer does not
support them and their records would be wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from traces.importers.common import BlockBuilder, rank_step_groups
from traces.importers.engine_arrays import (
    check_physical_map,
    moe_rows,
    num_hidden_layers,
    physical_to_logical,
    top_k_columns,
)
from traces.importers.torchfile import load_torch_file, save_torch_file, tensor, to_array
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.load_stats import LoadStats
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta

DUMP_NAME = re.compile(r"^expert_distribution_recorder_(\d+(?:\.\d+)?)(?:_(\d+))?\.pt$")
PRIMARY = "primary"
# SGLang's ForwardMode.EXTEND, the mode of a prefill pass (written by the exporter).
FORWARD_MODE_EXTEND = 1
# SGLang's per-token gatherer keeps 8 top-k columns whatever the model (DeepSeek-V3's k).
SGLANG_TOP_K_COLUMNS = 8


@dataclass(frozen=True, slots=True)
class DumpFile:
    path: Path
    time_s: float  # the dump's timestamp (seconds, from its file name)
    rank: int | None


def dump_files(source: Path) -> list[DumpFile]:
    """The dump files of a folder (or one file), in (time, rank) order."""
    if not source.exists():
        raise InputError(f"{source}: input not found")
    paths = sorted(source.iterdir()) if source.is_dir() else [source]
    out = []
    for p in paths:
        m = DUMP_NAME.match(p.name)
        if m:
            out.append(
                DumpFile(p, float(m.group(1)), None if m.group(2) is None else int(m.group(2)))
            )
        elif not source.is_dir():
            raise InputError(
                f"{p}: not an SGLang dump name (expert_distribution_recorder_<time>_<rank>.pt)"
            )
    if not out:
        raise InputError(f"{source}: holds no expert_distribution_recorder_*.pt files")
    return sorted(out, key=lambda f: (f.time_s, -1 if f.rank is None else f.rank))


def _load(f: DumpFile) -> dict[str, Any]:
    obj = load_torch_file(f.path)
    if not isinstance(obj, dict):
        raise InputError(f"{f.path}: expected the recorder's dict, got {type(obj).__name__}")
    return obj


def dump_mode(source: Path) -> str:
    """``per_token``, ``per_pass`` or ``stat``: what the first file of the dump holds."""
    obj = _load(dump_files(source)[0])
    if "logical_count" in obj:
        return "stat"
    records = obj.get("records")
    if not isinstance(records, list) or not records:
        raise InputError(f"{source}: neither 'records' nor 'logical_count'; not a recorder dump")
    first = records[0]
    if isinstance(first, dict) and "topk_ids_of_layer" in first:
        return "per_token"
    if isinstance(first, dict) and "global_physical_count" in first:
        return "per_pass"
    raise InputError(f"{source}: records hold neither topk_ids_of_layer nor global_physical_count")


def _check_ranks(ranks: set[int], source: Path, expected: int | None) -> None:
    n = expected if expected is not None else max(ranks) + 1
    missing = sorted(set(range(n)) - ranks)
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise InputError(f"{source}: ranks missing from the dump: {shown} (of 0..{n - 1})")
    extra = sorted(r for r in ranks if r >= n)
    if extra:
        raise InputError(f"{source}: rank {extra[0]} found, but --ranks says {n}")


def _records(files: list[DumpFile], model: ModelSpec, source: Path, expected_ranks: int | None):
    """(pass id, rank, file, record, physical map of the MoE layers) in (pass, rank) order."""
    keyed = []
    pmap_ref: np.ndarray | None = None
    ranks: set[int] = set()
    for f in files:
        obj = _load(f)
        records = obj.get("records")
        if not isinstance(records, list):
            raise InputError(f"{f.path}: no 'records' list (a 'stat' dump holds counts only)")
        if "last_physical_to_logical_map" not in obj:
            raise InputError(f"{f.path}: 'last_physical_to_logical_map' missing")
        where = f"{f.path}: last_physical_to_logical_map"
        pmap = check_physical_map(
            to_array(obj["last_physical_to_logical_map"], where), model, where
        )
        if pmap_ref is None:
            pmap_ref = pmap
        elif pmap.shape != pmap_ref.shape or not np.array_equal(pmap, pmap_ref):
            raise InputError(f"{f.path}: its physical_to_logical_map differs from the other ranks'")
        for i, rec in enumerate(records):
            where = f"{f.path}: record {i}"
            if not isinstance(rec, dict) or "topk_ids_of_layer" not in rec:
                raise InputError(f"{where}: not a per_token record (topk_ids_of_layer missing)")
            if rec.get("gatherer_key", PRIMARY) != PRIMARY:
                raise InputError(
                    f"{where}: gatherer_key {rec['gatherer_key']!r}: a two-batch-overlap run;"
                    " SGLang's per-token recorder does not support it, its ids are unusable"
                )
            rank = rec.get("rank", f.rank)
            if not isinstance(rank, int) or rank < 0:
                raise InputError(f"{where}: 'rank' must be a non-negative integer")
            if f.rank is not None and rank != f.rank:
                raise InputError(f"{where}: rank {rank} in a file named for rank {f.rank}")
            pass_id = rec.get("forward_pass_id")
            if not isinstance(pass_id, int):
                raise InputError(f"{where}: 'forward_pass_id' must be an integer")
            ranks.add(rank)
            keyed.append((pass_id, rank, f, i, rec))
    assert pmap_ref is not None
    _check_ranks(ranks, source, expected_ranks)
    keyed.sort(key=lambda r: (r[0], r[1], r[2].time_s, r[3]))
    return keyed, pmap_ref[list(model.moe_layer_indices)]


def _sequence_lengths(rec: dict[str, Any], tokens: int, where: str) -> np.ndarray:
    lens = rec.get("extend_seq_lens")
    if lens is None:
        return np.ones(tokens, dtype=np.int64)  # decode: one token per request
    arr = to_array(lens, f"{where}: extend_seq_lens").astype(np.int64).ravel()
    if (arr < 0).any() or int(arr.sum()) != tokens:
        raise InputError(f"{where}: extend_seq_lens sum to {int(arr.sum())}, not {tokens} tokens")
    return arr[arr > 0]


def iter_sglang_dump(
    source: str | Path,
    model: ModelSpec,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    expected_ranks: int | None = None,
) -> Iterator[RoutingTrace]:
    """Stream a ``per_token`` dump (folder of rank files) as trace blocks."""
    source = Path(source)
    files = dump_files(source)
    keyed, pmap_moe = _records(files, model, source, expected_ranks)
    meta = TraceMeta(
        model=model,
        source=f"SGLang expert distribution recorder (per_token) {source}",
        produced_by="moe-netsim trace import --format sglang-dump",
        extra={"origin_model": "recorded: the rank that served the token"},
    )
    builder = BlockBuilder(meta, chunk_tokens)
    geometry: tuple[int, int] | None = None
    next_seq = 0
    for pass_id, rank, f, i, rec in keyed:
        where = f"{f.path}: record {i}"
        ids = to_array(rec["topk_ids_of_layer"], f"{where}: topk_ids_of_layer")
        if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"{where}: topk_ids_of_layer must be an integer [layers, tokens, k]")
        if geometry is None:
            geometry = (ids.shape[0], ids.shape[2])
        elif (ids.shape[0], ids.shape[2]) != geometry:
            raise InputError(
                f"{where}: topk_ids_of_layer is [{ids.shape[0]} layers, k={ids.shape[2]}], earlier"
                f" records [{geometry[0]} layers, k={geometry[1]}]: mixed model geometries"
            )
        tokens = ids.shape[1]
        if tokens == 0:
            continue
        per_token = np.swapaxes(ids, 0, 1)  # [tokens, layers, k]
        dense = sorted(set(range(ids.shape[0])) - set(model.moe_layer_indices))
        if ids.shape[0] == num_hidden_layers(model) and (ids[dense] != -1).any():
            layer = dense[int(np.flatnonzero((ids[dense] != -1).any(axis=(1, 2)))[0])]
            raise InputError(
                f"{where}: layer {layer} has routed experts, but it is not a MoE layer of"
                f" {model.name!r}; wrong --model?"
            )
        routes = top_k_columns(moe_rows(per_token, model, where), model, where).astype(np.int64)
        experts = physical_to_logical(routes, pmap_moe, where)
        positions = to_array(rec.get("positions", np.arange(tokens)), f"{where}: positions")
        if positions.shape != (tokens,):
            raise InputError(f"{where}: {positions.size} positions for {tokens} tokens")
        lens = _sequence_lengths(rec, tokens, where)
        seq = np.repeat(np.arange(next_seq, next_seq + len(lens), dtype=np.int64), lens)
        next_seq += len(lens)
        yield from builder.add(
            experts,
            seq_id=seq,
            position=positions.astype(np.int32),
            origin_gpu=np.full(tokens, rank, dtype=np.int32),
            step=np.full(tokens, pass_id, dtype=np.int32),
        )
    yield from builder.finish()


def read_sglang_dump_counts(source: str | Path, model: ModelSpec) -> LoadStats:
    """A ``stat`` or ``per_pass`` dump as load statistics (logical counts summed over passes)."""
    source = Path(source)
    total = np.zeros((model.num_moe_layers, model.num_routed_experts))
    for f in dump_files(source):
        obj = _load(f)
        if "logical_count" in obj:
            where = f"{f.path}: logical_count"
            counts = to_array(obj["logical_count"], where)
            if counts.ndim == 2:
                counts = counts[None]
            if counts.ndim != 3 or counts.shape[2] != model.num_routed_experts:
                raise InputError(
                    f"{where}: shape {list(counts.shape)}, expected [passes, layers,"
                    f" {model.num_routed_experts} experts]"
                )
            total += moe_rows(counts.sum(axis=0, dtype=np.float64), model, where, axis=0)
            continue
        where = f"{f.path}: last_physical_to_logical_map"
        pmap = check_physical_map(
            to_array(obj.get("last_physical_to_logical_map"), where), model, where
        )[list(model.moe_layer_indices)]
        for i, rec in enumerate(obj.get("records") or []):
            where = f"{f.path}: record {i}"
            if not isinstance(rec, dict) or "global_physical_count" not in rec:
                raise InputError(f"{where}: not a per_pass record (global_physical_count missing)")
            counts = moe_rows(
                to_array(rec["global_physical_count"], where).astype(np.float64), model, where, 0
            )
            if counts.shape[1] != pmap.shape[1]:
                raise InputError(
                    f"{where}: {counts.shape[1]} physical experts, the map has {pmap.shape[1]}"
                )
            for li in range(model.num_moe_layers):
                np.add.at(total[li], pmap[li], counts[li])
    return LoadStats(model=model, counts=total, source=str(source))


def write_sglang_dump(
    blocks: Iterator[RoutingTrace],
    folder: Path,
    physical_to_logical_map: np.ndarray | None = None,
    time_s: float = 0.0,
) -> int:
    """Write trace blocks as a ``per_token`` dump: one file per origin rank, a record per step.

    Tokens of one (rank, step) form one pass; consecutive tokens of one sequence form one
    extend span.  Logical ids become the first physical copy in ``physical_to_logical_map``
    (default: the identity).  ``input_ids`` are not in a native trace: they are written as 0.
    Returns the token count.
    """
    per_rank: dict[int, list[dict[str, Any]]] = {}
    model: ModelSpec | None = None
    count = 0
    for b in blocks:
        model = b.meta.model
        for r, s, sel in rank_step_groups(b):
            per_rank.setdefault(r, []).append(_record(b, sel, r, s))
        count += b.num_tokens
    if model is None:
        raise InputError(f"{folder}: the trace holds no tokens; nothing written")
    pmap = _export_map(model, physical_to_logical_map)
    first_copy = _first_copy(pmap, model)
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(max(per_rank) + 1):
        records = [
            _to_physical(rec, first_copy, model) for rec in _merge_passes(per_rank.get(r, []))
        ]
        path = folder / f"expert_distribution_recorder_{time_s}_{r}.pt"
        with atomic_output(path) as tmp:
            save_torch_file(
                {"records": records, "last_physical_to_logical_map": tensor(pmap, str(path))}, tmp
            )
    return count


def _record(b: RoutingTrace, sel: np.ndarray, rank: int, step: int) -> dict[str, Any]:
    seq = b.seq_id[sel]
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    lens = np.diff(np.r_[starts, len(seq)])
    return {
        "forward_pass_id": step,
        "rank": rank,
        "logical": b.experts[sel].astype(np.int64),
        "positions": b.position[sel].astype(np.int64),
        "extend_seq_lens": lens.astype(np.int64),
    }


def _merge_passes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per pass id (a pass split across trace blocks is joined)."""
    merged: dict[int, dict[str, Any]] = {}
    for rec in records:
        m = merged.get(rec["forward_pass_id"])
        if m is None:
            merged[rec["forward_pass_id"]] = dict(rec)
            continue
        for key in ("logical", "positions", "extend_seq_lens"):
            m[key] = np.concatenate([m[key], rec[key]])
    return [merged[k] for k in sorted(merged)]


def _export_map(model: ModelSpec, pmap: np.ndarray | None) -> np.ndarray:
    if pmap is None:
        row = np.arange(model.num_routed_experts)
        return np.tile(row, (num_hidden_layers(model), 1))
    return check_physical_map(np.asarray(pmap), model, "physical_to_logical_map")


def _first_copy(pmap: np.ndarray, model: ModelSpec) -> np.ndarray:
    """[moe_layers, experts]: the first physical id of every logical expert."""
    out = np.full((model.num_moe_layers, model.num_routed_experts), -1, dtype=np.int64)
    for li, layer in enumerate(model.moe_layer_indices):
        row = pmap[layer]
        for p in range(len(row) - 1, -1, -1):
            out[li, row[p]] = p
    if (out < 0).any():
        li, e = (int(x) for x in np.argwhere(out < 0)[0])
        raise InputError(f"physical_to_logical_map: expert {e} of MoE layer {li} has no copy")
    return out


def _to_physical(rec: dict[str, Any], first_copy: np.ndarray, model: ModelSpec) -> dict[str, Any]:
    """The record as SGLang writes it: [transformer layers, tokens, 8] physical ids, -1 unused."""
    logical = rec.pop("logical")
    tokens, layers, k = logical.shape
    physical = first_copy[np.arange(layers)[None, :, None], logical]  # [tokens, moe_layers, k]
    ids = np.full((num_hidden_layers(model), tokens, max(SGLANG_TOP_K_COLUMNS, k)), -1, np.int32)
    ids[list(model.moe_layer_indices), :, :k] = np.swapaxes(physical, 0, 1)
    return {
        "forward_pass_id": rec["forward_pass_id"],
        "rank": rec["rank"],
        "gatherer_key": PRIMARY,
        "input_ids": [0] * tokens,
        "positions": [int(x) for x in rec["positions"]],
        "extend_seq_lens": [int(x) for x in rec["extend_seq_lens"]],
        "forward_mode": FORWARD_MODE_EXTEND,
        "topk_ids_of_layer": tensor(ids, "topk_ids_of_layer"),
        "misc_objects": [],
    }
