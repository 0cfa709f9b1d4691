"""vLLM routed-experts arrays: integer [tokens, layers, top_k], one array per request.

vLLM's ``--enable-return-routed-experts`` (vLLM 0.23) gives each ``CompletionOutput`` a
``routed_experts`` int16 array [seq_len, layers, top_k] covering prompt and output tokens;
saved with NumPy it is this format.  The layer axis may hold the MoE layers only or every
transformer layer (dense rows are then ignored).

Accepted inputs: one ``.npy`` (one request), one ``.npz`` (every array in it is a request, in
archive order) or a folder of them (files in natural name order, so ``req_2`` precedes
``req_10``).  Every request becomes one sequence (``seq_id`` = request number, ``position`` =
token index).  ``.npy`` files are memory-mapped and read in chunks.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from traces.importers.common import BlockBuilder, check_routes, sequence_runs
from traces.importers.engine_arrays import moe_rows, num_hidden_layers
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta


def _natural_key(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _request_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        files = sorted(
            (f for f in path.iterdir() if f.suffix in (".npy", ".npz")), key=_natural_key
        )
        if not files:
            raise InputError(f"{path}: folder holds no .npy or .npz files")
        return files
    if path.suffix not in (".npy", ".npz"):
        raise InputError(f"{path}: expected a .npy or .npz file or a folder of them")
    return [path]


def _requests(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name for messages, array) per request; .npy memory-mapped."""
    for f in files:
        try:
            if f.suffix == ".npy":
                yield str(f), np.load(f, mmap_mode="r", allow_pickle=False)
                continue
            with np.load(f, allow_pickle=False) as z:
                if not z.files:
                    raise InputError(f"{f}: archive holds no arrays")
                for key in z.files:
                    yield f"{f}[{key}]", z[key]
        except InputError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(
                f"{f}: cannot read the array ({exc.__class__.__name__}: {exc});"
                " truncated or not a numeric NumPy file?"
            ) from None


def iter_vllm(
    source: str | Path,
    model: ModelSpec,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> Iterator[RoutingTrace]:
    """Stream vLLM routed-experts arrays as trace blocks (one sequence per request)."""
    source = Path(source)
    files = _request_files(source)
    meta = TraceMeta(
        model=model,
        source=f"vLLM routed experts {source}",
        produced_by="moe-netsim trace import --format vllm",
    )
    builder = BlockBuilder(meta, chunk_tokens)
    for seq, (name, arr) in enumerate(_requests(files)):
        if arr.ndim != 3 or arr.shape[2] != model.top_k:
            raise InputError(
                f"{name}: shape {list(arr.shape)}, expected [tokens, {model.num_moe_layers} MoE"
                f" layers (or all {num_hidden_layers(model)} layers), top_k={model.top_k}] for"
                f" {model.name!r}"
            )
        arr = moe_rows(arr, model, name)
        if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            raise InputError(f"{name}: dtype {arr.dtype}; expert ids must be integers (int16)")
        if arr.shape[0] == 0:
            raise InputError(f"{name}: empty request (0 tokens)")
        for start in range(0, arr.shape[0], chunk_tokens):
            part = np.asarray(arr[start : start + chunk_tokens], dtype=np.int64)
            check_routes(part, model, name, first_token=start)
            n = part.shape[0]
            yield from builder.add(
                part,
                seq_id=np.full(n, seq, dtype=np.int64),
                position=np.arange(start, start + n, dtype=np.int32),
            )
    yield from builder.finish()


def write_vllm(blocks: Iterator[RoutingTrace], path: Path) -> int:
    """One int16 array [tokens, MoE layers, top_k] per sequence, in one ``.npz`` archive."""
    from traces.infra.atomic import atomic_output

    arrays = {f"req_{seq}": e.astype(np.int16) for seq, e, _ in sequence_runs(blocks)}
    if not arrays:
        raise InputError(f"{path}: the trace holds no tokens; nothing written")
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
    return sum(len(a) for a in arrays.values())
