"""Bad-input cases: native traces, model specs, SGLang logical_count JSON.

Registered into ``badinput.CASES`` on import (``tests/badinput.py`` imports every case module
in catalogue order).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from badinput import (
    TINY,
    Thunk,
    _experts_column,
    _meta_dict,
    _read,
    _rewrite,
    _with_column,
    _with_meta,
    case,
    tiny_trace,
    valid_trace_file,
)

from traces import ModelSpec, model_preset
from traces.io import read_trace_meta, write_trace
from traces.load_stats import (
    read_sglang_logical_count,
)

# ---------------------------------------------------------------------------------------------
# Native trace (Parquet): traces.io.read_trace / read_trace_meta / iter_trace

TRACE = "native trace (Parquet)"


@case(TRACE, "missing file", "nope.parquet", "not found")
def _(d: Path) -> Thunk:
    return _read(d / "nope.parquet")


@case(TRACE, "a directory, not a file", "adir", "not a readable Parquet trace")
def _(d: Path) -> Thunk:
    (d / "adir").mkdir()
    return _read(d / "adir")


@case(TRACE, "empty file (0 bytes)", "empty.parquet", "not a readable Parquet trace")
def _(d: Path) -> Thunk:
    (d / "empty.parquet").write_bytes(b"")
    return _read(d / "empty.parquet")


@case(TRACE, "not Parquet (CSV text)", "t.parquet", "not a readable Parquet trace")
def _(d: Path) -> Thunk:
    (d / "t.parquet").write_text("seq_id,position\n0,0\n")
    return _read(d / "t.parquet")


@case(TRACE, "truncated (second half cut off)", "cut.parquet", "not a readable Parquet trace")
def _(d: Path) -> Thunk:
    p = valid_trace_file(d, "cut.parquet")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return _read(p)


@case(TRACE, "corrupt data pages (bytes overwritten)", "bad.parquet", "truncated or corrupt")
def _(d: Path) -> Thunk:
    p = valid_trace_file(d, "bad.parquet")
    data = bytearray(p.read_bytes())
    data[4:200] = b"\xff" * 196  # page headers and data after the magic bytes
    p.write_bytes(bytes(data))
    return _read(p)


@case(TRACE, "Parquet without moe-netsim metadata", "plain.parquet", "no moe-netsim trace metadata")
def _(d: Path) -> Thunk:
    pd.DataFrame({"seq_id": [0, 1]}).to_parquet(d / "plain.parquet")
    return _read(d / "plain.parquet")


@case(TRACE, "metadata is not JSON", "trace.parquet", "metadata is not valid JSON")
def _(d: Path) -> Thunk:
    return _read(_with_meta(d, "{not json"))


@case(TRACE, "metadata of another format", "trace.parquet", "not a moe-netsim trace")
def _(d: Path) -> Thunk:
    return _read(_with_meta(d, {"format": "something-else", "version": 1}))


@case(TRACE, "unsupported format version", "trace.parquet", "unsupported trace format version 7")
def _(d: Path) -> Thunk:
    m = _meta_dict()
    m["version"] = 7
    return _read(_with_meta(d, m))


@case(TRACE, "metadata without a model", "trace.parquet", "'model'", "missing")
def _(d: Path) -> Thunk:
    m = _meta_dict()
    del m["model"]
    return _read(_with_meta(d, m))


@case(TRACE, "metadata with an unknown key", "trace.parquet", "unknown keys ['sourse']", "'extra'")
def _(d: Path) -> Thunk:
    m = _meta_dict()
    m["sourse"] = "typo"
    return _read(_with_meta(d, m))


@case(TRACE, "model spec with an unknown key", "trace.parquet", "model.colour: unknown key")
def _(d: Path) -> Thunk:
    return _read(_with_meta(d, _meta_dict(colour="red")))


@case(TRACE, "model spec: top_k > experts", "trace.parquet", "top_k=9")
def _(d: Path) -> Thunk:
    return _read(_with_meta(d, _meta_dict(top_k=9)))


@case(TRACE, "metadata 'extra' not an object", "trace.parquet", "'extra'")
def _(d: Path) -> Thunk:
    m = _meta_dict()
    m["extra"] = "oops"
    return _read(_with_meta(d, m))


@case(TRACE, "experts column of a MoE layer missing", "trace.parquet", "experts_L2 missing")
def _(d: Path) -> Thunk:
    p = valid_trace_file(d)
    t = pq.read_table(p)
    _rewrite(p, t.drop(["experts_L2"]).replace_schema_metadata(t.schema.metadata))
    return _read(p)


@case(TRACE, "seq_id column missing", "trace.parquet", "seq_id")
def _(d: Path) -> Thunk:
    p = valid_trace_file(d)
    t = pq.read_table(p)
    _rewrite(p, t.drop(["seq_id"]).replace_schema_metadata(t.schema.metadata))
    return _read(p)


@case(TRACE, "experts column holds strings", "trace.parquet", "experts_L1", "integer")
def _(d: Path) -> Thunk:
    col = pa.array([["a", "b"]] * 6, type=pa.list_(pa.string(), 2))
    return _read(_with_column(d, "experts_L1", col))


@case(TRACE, "seq_id column holds floats (with NaN)", "trace.parquet", "seq_id", "integer")
def _(d: Path) -> Thunk:
    return _read(_with_column(d, "seq_id", pa.array([0.0, 1.0, np.nan, 3.0, 4.0, 5.0])))


@case(TRACE, "experts lists of the wrong length", "trace.parquet", "experts_L1", "2 expert ids")
def _(d: Path) -> Thunk:
    rows = [[0, 1, 2]] * 6
    return _read(_with_column(d, "experts_L1", pa.array(rows, type=pa.list_(pa.uint8()))))


@case(TRACE, "missing values in an experts column", "trace.parquet", "experts_L1", "missing")
def _(d: Path) -> Thunk:
    rows: list[Any] = [[0, 1]] * 5 + [None]
    return _read(_with_column(d, "experts_L1", _experts_column(rows)))


@case(TRACE, "expert id out of range", "trace.parquet", "expert id 200 out of range 0..7")
def _(d: Path) -> Thunk:
    return _read(_with_column(d, "experts_L2", _experts_column([[0, 1]] * 5 + [[200, 1]])))


@case(TRACE, "duplicate expert ids in one token", "trace.parquet", "token 3", "not distinct")
def _(d: Path) -> Thunk:
    rows = [[0, 1]] * 3 + [[4, 4]] + [[0, 1]] * 2
    return _read(_with_column(d, "experts_L1", _experts_column(rows)))


@case(TRACE, "negative position", "trace.parquet", "position", ">= 0")
def _(d: Path) -> Thunk:
    return _read(_with_column(d, "position", pa.array([0, 1, -3, 0, 0, 0], type=pa.int32())))


@case(TRACE, "origin_gpu below -1", "trace.parquet", "origin_gpu", ">= -1")
def _(d: Path) -> Thunk:
    return _read(_with_column(d, "origin_gpu", pa.array([0, 0, -5, 0, 0, 0], type=pa.int32())))


@case(TRACE, "NaN gate weights", "g.parquet", "gate", "NaN")
def _(d: Path) -> Thunk:
    t = tiny_trace()
    gates = np.full(t.experts.shape, 0.5, dtype=np.float32)
    gates[2, 1, 0] = np.nan
    from dataclasses import replace

    p = write_trace(d / "g.parquet", replace(t, gates=np.full_like(gates, 0.5)))
    tab = pq.read_table(p)
    col = pa.FixedSizeListArray.from_arrays(pa.array(gates[:, 1, :].reshape(-1)), 2)
    tab = tab.set_column(tab.schema.get_field_index("gates_L2"), "gates_L2", col)
    _rewrite(p, tab.replace_schema_metadata(pq.read_schema(p).metadata))
    return _read(p)


@case(TRACE, "metadata only read (read_trace_meta) of a non-trace", "x.parquet", "not a readable")
def _(d: Path) -> Thunk:
    (d / "x.parquet").write_bytes(b"PAR1garbagePAR1")
    return lambda: read_trace_meta(d / "x.parquet")


# ---------------------------------------------------------------------------------------------
# Model spec: ModelSpec.from_dict, model_preset

MODEL = "model spec"


def _spec(**changes: Any) -> dict[str, Any]:
    d = TINY.to_dict()
    d.update(changes)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


@case(MODEL, "unknown preset name", "unknown model preset 'gpt-5'", "known:")
def _(d: Path) -> Thunk:
    return lambda: model_preset("gpt-5")


@case(MODEL, "not an object", "model:", "object")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict([1, 2])  # type: ignore[arg-type]


@case(MODEL, "unknown key", "model.experts: unknown key")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(experts=8))


@case(MODEL, "required key missing", "model:", "'top_k'", "missing")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(top_k=_DROP))


@case(MODEL, "count given as a string", "model.num_routed_experts", "integer")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(num_routed_experts="64"))


@case(MODEL, "layer indices not a list", "model.moe_layer_indices", "list")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(moe_layer_indices=5))


@case(MODEL, "layer indices not increasing", "MoE layer indices must be increasing")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(moe_layer_indices=[3, 1]))


@case(MODEL, "zero experts", "num_routed_experts must be in 1..65535")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(num_routed_experts=0))


@case(MODEL, "groups do not divide experts", "num_expert_groups must divide")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(num_expert_groups=3))


@case(MODEL, "negative hidden size", "hidden_size >= 1")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(hidden_size=-1))


# ---------------------------------------------------------------------------------------------
# SGLang logical_count JSON: traces.load_stats.read_sglang_logical_count

SGL = "SGLang logical_count JSON"


def _sglang(d: Path, obj: Any, name: str = "stats.json") -> Thunk:
    p = d / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return lambda: read_sglang_logical_count(p, TINY)


def _counts(rows: int = 3, experts: int = 8) -> list[list[float]]:
    # row 0 is the dense layer of TINY (MoE layers 1..2): SGLang leaves it at zero
    return [[float(i + j) if i else 0.0 for j in range(experts)] for i in range(rows)]


@case(SGL, "missing file", "nope.json", "not found")
def _(d: Path) -> Thunk:
    return lambda: read_sglang_logical_count(d / "nope.json", TINY)


@case(SGL, "a directory, not a file", "sdir", "cannot read")
def _(d: Path) -> Thunk:
    (d / "sdir").mkdir()
    return lambda: read_sglang_logical_count(d / "sdir", TINY)


@case(SGL, "empty file", "stats.json", "not valid JSON")
def _(d: Path) -> Thunk:
    return _sglang(d, "")


@case(SGL, "not UTF-8", "stats.json", "not valid JSON")
def _(d: Path) -> Thunk:
    (d / "stats.json").write_bytes(b"\xff\xfe{")
    return lambda: read_sglang_logical_count(d / "stats.json", TINY)


@case(SGL, "no 'logical_count' key", "stats.json", "'logical_count'")
def _(d: Path) -> Thunk:
    return _sglang(d, {"counts": _counts()})


@case(SGL, "empty layer list", "stats.json", "non-empty list")
def _(d: Path) -> Thunk:
    return _sglang(d, {"logical_count": []})


@case(SGL, "fewer layers than the model", "stats.json", "has 2 layers", "needs 3")
def _(d: Path) -> Thunk:
    return _sglang(d, {"logical_count": _counts(rows=2)})


@case(SGL, "a layer with the wrong expert count", "stats.json", "logical_count[2] has 7 entries")
def _(d: Path) -> Thunk:
    rows = _counts()
    rows[2] = rows[2][:7]
    return _sglang(d, {"logical_count": rows})


@case(SGL, "non-numeric counts", "stats.json", "logical_count[1]", "non-numbers")
def _(d: Path) -> Thunk:
    rows: list[Any] = _counts()
    rows[1] = ["x"] * 8
    return _sglang(d, {"logical_count": rows})


@case(SGL, "negative count", "stats.json", "logical_count[2][5]", ">= 0")
def _(d: Path) -> Thunk:
    rows = _counts()
    rows[2][5] = -1.0
    return _sglang(d, {"logical_count": rows})


@case(SGL, "NaN count", "stats.json", "logical_count[1][0] = nan")
def _(d: Path) -> Thunk:
    rows = _counts()
    rows[1][0] = float("nan")
    return _sglang(d, json.dumps({"logical_count": rows}))  # Python's json writes NaN


@case(SGL, "a MoE layer with no tokens (activation)", "stats.json", "MoE layer 1 has no routed")
def _(d: Path) -> Thunk:
    rows = _counts()
    rows[1] = [0.0] * 8
    read = _sglang(d, {"logical_count": rows})
    return lambda: read().activation()
