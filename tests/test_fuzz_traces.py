"""Fuzzing the readers of routing data: native traces (byte- and Arrow-mutated), TraceMeta,
ModelSpec, SGLang logical_count, the ESFT, vLLM and table importers and load-statistics
Parquet.  Any exception other than InputError fails (profiles in tests/fuzzing.py).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from badinput import TINY, tiny_trace
from badinput_importers import TOY, _esft_lines, _stats_file, _table_frame, _vllm_ok
from fuzzing import FUZZ, _mutate_json, json_paths, json_values, only_input_errors
from hypothesis import given
from hypothesis import strategies as st

from traces import ModelSpec, TraceMeta
from traces.importers import iter_esft, iter_table, iter_vllm
from traces.io import META_KEY, read_trace, write_trace
from traces.load_stats import LOAD_STATS_KEY, load_load_stats, read_sglang_logical_count

# --- native trace -----------------------------------------------------------------------------

_TRACE_BYTES: bytes | None = None


def _trace_bytes() -> bytes:
    global _TRACE_BYTES
    if _TRACE_BYTES is None:
        with tempfile.TemporaryDirectory() as d:
            _TRACE_BYTES = write_trace(Path(d) / "t.parquet", tiny_trace(40)).read_bytes()
    return _TRACE_BYTES


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_trace_reader_on_byte_mutated_files(edits, cut, tmp_path_factory):
    data = bytearray(_trace_bytes())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    p = tmp_path_factory.mktemp("fz") / "t.parquet"
    p.write_bytes(bytes(data))
    only_input_errors(lambda: read_trace(p))


_column_values = st.sampled_from(["int8", "int64", "uint16", "float", "string", "list-int",
                                  "list-float", "list-short", "null"])


def _arrow_column(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    ints = rng.integers(-3, 300, size=n)
    if kind == "int8":
        return pa.array(np.clip(ints, -128, 127).astype(np.int8))
    if kind == "int64":
        return pa.array(ints.astype(np.int64))
    if kind == "uint16":
        return pa.array(np.abs(ints).astype(np.uint16))
    if kind == "float":
        v = ints.astype(float)
        v[0] = np.nan
        return pa.array(v)
    if kind == "string":
        return pa.array([str(x) for x in ints])
    if kind == "list-int":
        return pa.array([[int(x), int(x) + 1] for x in ints], type=pa.list_(pa.int64()))
    if kind == "list-float":
        return pa.array([[float(x), np.nan] for x in ints], type=pa.list_(pa.float64(), 2))
    if kind == "list-short":
        return pa.array([[int(x)] for x in ints], type=pa.list_(pa.int32()))
    return pa.nulls(n, pa.int32())


@FUZZ
@given(
    column=st.sampled_from(["seq_id", "position", "origin_gpu", "step", "experts_L1",
                            "experts_L2"]),
    kind=_column_values,
    seed=st.integers(0, 2**16),
    meta_path=st.one_of(st.none(), json_paths),
    meta_value=json_values,
    delete=st.booleans(),
)
def test_trace_reader_on_arrow_mutated_files(column, kind, seed, meta_path, meta_value, delete,
                                             tmp_path_factory):
    d = tmp_path_factory.mktemp("fz")
    p = write_trace(d / "t.parquet", tiny_trace(10))
    t = pq.read_table(p)
    col = _arrow_column(kind, t.num_rows, np.random.default_rng(seed))
    t = t.set_column(t.schema.get_field_index(column), pa.field(column, col.type), col)
    meta = json.loads(TraceMeta(model=TINY).to_json())
    if meta_path is not None:
        meta = _mutate_json(meta, meta_path, meta_value, delete)
    raw = json.dumps(meta).encode()
    pq.write_table(t.replace_schema_metadata({META_KEY: raw}), p)
    only_input_errors(lambda: read_trace(p))


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(json.dumps))
def test_trace_meta_from_json_on_random_text(text):
    only_input_errors(lambda: TraceMeta.from_json(text))


@FUZZ
@given(path=json_paths, value=json_values, delete=st.booleans())
def test_trace_meta_from_json_on_mutated_metadata(path, value, delete):
    meta = _mutate_json(json.loads(TraceMeta(model=TINY).to_json()), path, value, delete)
    only_input_errors(lambda: TraceMeta.from_json(json.dumps(meta)))


# --- model spec -------------------------------------------------------------------------------

_MODEL_KEYS = list(TINY.to_dict()) + ["bogus"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(_MODEL_KEYS), json_values, max_size=4),
       drop=st.lists(st.sampled_from(_MODEL_KEYS), max_size=2))
def test_model_spec_from_dict(changes, drop):
    d = {**TINY.to_dict(), **changes}
    for k in drop:
        d.pop(k, None)
    only_input_errors(lambda: ModelSpec.from_dict(d))


@FUZZ
@given(value=json_values)
def test_model_spec_from_any_json(value):
    only_input_errors(lambda: ModelSpec.from_dict(value))



# --- SGLang logical_count ---------------------------------------------------------------------


def _sglang_doc() -> dict[str, Any]:
    return {"logical_count": [[float(i * j) for j in range(8)] for i in range(3)]}


@FUZZ
@given(path=json_paths, value=json_values, delete=st.booleans())
def test_sglang_reader_on_mutated_json(path, value, delete, tmp_path_factory):
    doc = _mutate_json(_sglang_doc(), path, value, delete)
    p = tmp_path_factory.mktemp("fz") / "stats.json"
    p.write_text(json.dumps(doc))

    def read() -> None:
        stats = read_sglang_logical_count(p, TINY)
        a = stats.activation()
        assert np.isfinite(a).all() and math.isclose(a.sum(axis=1)[0], TINY.top_k)

    only_input_errors(read)


@FUZZ
@given(data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_sglang_reader_on_random_bytes(data, tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "stats.json"
    p.write_bytes(data)
    only_input_errors(lambda: read_sglang_logical_count(p, TINY))


# --- ESFT expert-score folders ----------------------------------------------------------------

_ESFT_CHARS = "0123456789\t.-+enaif x\r"


def _write_esft(d: Path, lines: dict[int, list[str]]) -> Path:
    d.mkdir()
    for layer, ls in lines.items():
        (d / f"expert_weights_{layer}.txt").write_text("".join(x + "\n" for x in ls))
    return d


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.sampled_from([1, 2]), st.integers(0, 3),
                  st.sampled_from(["replace", "delete", "append", "splice"]),
                  st.text(alphabet=_ESFT_CHARS, max_size=40)),
        min_size=1, max_size=4,
    ),
)
def test_esft_importer_on_mutated_lines(edits, tmp_path_factory):
    lines = {layer: _esft_lines(layer) for layer in (1, 2)}
    for layer, i, op, text in edits:
        ls = lines[layer]
        j = i % len(ls) if ls else 0
        if op == "replace" and ls:
            ls[j] = text
        elif op == "delete" and ls:
            del ls[j]
        elif op == "append":
            ls.append(text)
        elif ls:  # splice random text into a line
            ls[j] = ls[j][: len(text)] + text + ls[j][len(text) * 2 :]
    folder = _write_esft(tmp_path_factory.mktemp("fz") / "task", lines)
    only_input_errors(lambda: list(iter_esft(folder, TOY)))


# --- vLLM arrays ------------------------------------------------------------------------------

_VLLM_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint64", "float16",
                "float64", "bool", "complex64", "U2", "object"]


@FUZZ
@given(
    shape=st.lists(st.integers(0, 4), max_size=4),
    dtype=st.sampled_from(_VLLM_DTYPES),
    values=st.lists(st.integers(-(2**40), 2**40) | st.integers(-2, 9), min_size=1, max_size=20),
    npz=st.booleans(),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_vllm_importer_on_random_arrays(shape, dtype, values, npz, cut, tmp_path_factory):
    n = int(np.prod(shape)) if shape else 1
    flat = np.array([values[i % len(values)] for i in range(n)], dtype=object)
    if dtype == "object":
        arr = flat.reshape(shape)
    else:
        with np.errstate(all="ignore"):
            arr = np.array([int(v) % 2**16 - 2**15 if dtype != "U2" else str(v)[:2]
                            for v in flat]).astype(dtype).reshape(shape)
    d = tmp_path_factory.mktemp("fz")
    p = d / ("req.npz" if npz else "req.npy")
    if npz:
        np.savez(p, a=arr, b=_vllm_ok())
    else:
        np.save(p, arr, allow_pickle=True)
    if cut is not None:
        data = p.read_bytes()
        p.write_bytes(data[: cut % (len(data) + 1)])
    only_input_errors(lambda: list(iter_vllm(p, TOY)))


# --- long routing tables ----------------------------------------------------------------------

_table_cells = (
    st.integers(-2, 9)
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet="ab1.", max_size=3)
    | st.none()
)


@FUZZ
@given(
    columns=st.lists(st.sampled_from(["token", "layer", "rank", "expert", "seq_id", "position",
                                      "origin_gpu", "step", "gate", "x"]),
                     max_size=7, unique=True),
    base=st.booleans(),
    rows=st.integers(0, 14),
    cells=st.lists(_table_cells, min_size=40, max_size=40),
    int_only=st.booleans(),
    parquet=st.booleans(),
)
def test_table_importer_on_random_frames(columns, base, rows, cells, int_only, parquet,
                                         tmp_path_factory):
    df = (_table_frame().iloc[:rows].reset_index(drop=True) if base
          else pd.DataFrame(index=range(rows)))
    for j, c in enumerate(columns):
        vals = [cells[(j * 7 + r) % len(cells)] for r in range(len(df))]
        if int_only:
            vals = [v if isinstance(v, int) else r % 3 for r, v in enumerate(vals)]
        df[c] = pd.Series(vals, dtype=object) if not int_only else vals
    p = tmp_path_factory.mktemp("fz") / ("routes.parquet" if parquet else "routes.csv")
    try:
        df.to_parquet(p, index=False) if parquet else df.to_csv(p, index=False)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return  # pandas cannot write this frame: not a file a user could give us
    only_input_errors(lambda: list(iter_table(p, TOY)))


@FUZZ
@given(text=st.text(alphabet="tokenlayrpxg,0123456789-.\n", max_size=200))
def test_table_importer_on_random_csv(text, tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "routes.csv"
    p.write_text("token,layer,rank,expert\n" + text)
    only_input_errors(lambda: list(iter_table(p, TOY)))


# --- load statistics Parquet ------------------------------------------------------------------


@FUZZ
@given(
    column=st.sampled_from(["layer", "expert", "count"]),
    kind=_column_values,
    seed=st.integers(0, 2**16),
    rows=st.integers(0, 20),
    meta_path=st.one_of(st.none(), json_paths),
    meta_value=json_values,
    delete=st.booleans(),
    model=st.sampled_from([None, TOY]),
)
def test_load_stats_on_mutated_parquet(column, kind, seed, rows, meta_path, meta_value, delete,
                                       model, tmp_path_factory):
    d = tmp_path_factory.mktemp("fz")
    p = _stats_file(d)
    t = pq.read_table(p)
    meta = json.loads(t.schema.metadata[LOAD_STATS_KEY])
    t = t.slice(0, rows)
    col = _arrow_column(kind, t.num_rows, np.random.default_rng(seed)) if t.num_rows else None
    if col is not None:
        t = t.set_column(t.schema.get_field_index(column), pa.field(column, col.type), col)
    if meta_path is not None:
        meta = _mutate_json(meta, meta_path, meta_value, delete)
    pq.write_table(t.replace_schema_metadata({LOAD_STATS_KEY: json.dumps(meta).encode()}), p)

    def read() -> None:
        stats = load_load_stats(p, model)
        assert np.isfinite(stats.counts).all() and (stats.counts >= 0).all()

    only_input_errors(read)
