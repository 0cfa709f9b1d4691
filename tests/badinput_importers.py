"""Bad-input cases: the trace importers (ESFT, vLLM, tables) and load-statistics Parquet.

Registered into ``badinput.CASES`` on import (``tests/badinput.py`` imports every case module
in catalogue order).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from badinput import (
    CASES,
    Case,
    Thunk,
    case,
)

from traces import ModelSpec
from traces.importers import import_trace
from traces.load_stats import (
    LOAD_STATS_KEY,
    LoadStats,
    load_load_stats,
    save_load_stats,
)

# ---------------------------------------------------------------------------------------------
# Trace importers: traces.importers.import_trace (ESFT folders, vLLM arrays, long tables).
# Each writes its output in the case directory, so "nothing left behind" covers the output.

TOY = ModelSpec("toy", (1, 2), 8, 0, 2, 16)  # 2 MoE layers (1, 2), 8 experts, top-2
ESFT = "ESFT expert-score folder"


def _import(fmt: str, src: Path, d: Path) -> Thunk:
    return lambda: import_trace(fmt, src, d / "out.parquet", TOY)


def _esft_lines(layer: int) -> list[str]:
    # two sequences (2 tokens, 1 token), top-2: ids, an empty field, gate probabilities
    return [f"{layer}\t0\t5\t6\t\t0.5\t0.25\t0.125\t0.0625", f"7\t{layer}\t\t0.3\t0.2"]


def _esft(edit: Callable[[dict[int, list[str]]], None]) -> Callable[[Path], Thunk]:
    def setup(d: Path) -> Thunk:
        lines = {layer: _esft_lines(layer) for layer in (1, 2)}
        edit(lines)
        (d / "task").mkdir()
        for layer, ls in lines.items():
            (d / "task" / f"expert_weights_{layer}.txt").write_text("".join(x + "\n" for x in ls))
        return _import("esft", d / "task", d)

    return setup


def _register_esft(name: str, edit: Callable[[dict[int, list[str]]], None], *expect: str) -> None:
    CASES.append(Case(ESFT, name, expect, _esft(edit)))


def _esft_line(layer: int, i: int, text: str) -> Callable[[dict[int, list[str]]], None]:
    return lambda lines: lines[layer].__setitem__(i, text)


_register_esft("layer file missing", lambda lines: lines.pop(2), "task",
               "expert_weights_2.txt missing")
_register_esft("layer files of unequal length", lambda lines: lines[2].pop(),
               "expert_weights_2.txt: has 1 lines but expert_weights_1.txt has at least 2")
_register_esft("id count not a multiple of top_k", _esft_line(1, 1, "7\t1\t3\t\t0.3\t0.2\t0.1"),
               "expert_weights_1.txt, line 2", "not a multiple of top_k=2")
_register_esft("expert id out of range", _esft_line(2, 0, "2\t0\t5\t9\t\t0.5\t0.25\t0.1\t0.1"),
               "expert_weights_2.txt, line 1 (MoE layer 2)", "token 1", "9")
_register_esft("duplicate ids in a token", _esft_line(1, 1, "7\t7\t\t0.3\t0.2"),
               "expert_weights_1.txt, line 2", "token 0")
_register_esft("NaN gate", _esft_line(1, 0, "1\t0\t5\t6\t\t0.5\tnan\t0.125\t0.0625"),
               "expert_weights_1.txt, line 1", "token 0", "not a probability")
_register_esft("empty layer files", lambda lines: lines.update({1: [], 2: []}),
               "expert_weights_1.txt: empty file")
_register_esft("token counts differ across layers",
               _esft_line(2, 1, "7\t2\t0\t1\t\t.3\t.2\t.1\t.1"),
               "expert_weights_2.txt, line 2", "2 tokens, but expert_weights_1.txt has 1")
_register_esft("expert id beyond 64-bit", _esft_line(1, 0, "1\t99999999999999999999\t5\t6"),
               "line 1", "field 2", "too large")
_register_esft("expert id not a number", _esft_line(1, 0, "1\tx\t5\t6"),
               "line 1", "'x', not a number")

VLLM = "vLLM routed experts (.npy/.npz)"


def _vllm(arr: Any, name: str = "req.npy") -> Callable[[Path], Thunk]:
    def setup(d: Path) -> Thunk:
        p = d / name
        if name.endswith(".npz"):
            np.savez(p, **arr)
        else:
            np.save(p, arr)
        return _import("vllm", p, d)

    return setup


def _vllm_ok(n: int = 3) -> np.ndarray:
    return np.stack([np.arange(n) % 8, (np.arange(n) + 1) % 8], 1)[:, None, :].repeat(2, 1)


def _vllm_with(i: int, j: int, k: int, v: int) -> np.ndarray:
    a = _vllm_ok().astype(np.int16)
    a[i, j, k] = v
    return a


for _name, _arr, _expect in [
    ("2-D array", np.zeros((3, 4), np.int16), ("req.npy: shape [3, 4]", "expected [tokens, 2")),
    ("wrong top_k", np.zeros((3, 2, 3), np.int16), ("shape [3, 2, 3]", "top_k=2")),
    ("float dtype", _vllm_ok().astype(np.float32), ("req.npy: dtype float32", "integers")),
    ("bool dtype", _vllm_ok() > 0, ("req.npy: dtype bool",)),
    ("expert id out of range", _vllm_with(2, 1, 0, 8),
     ("req.npy: token 2, MoE layer 2", "8")),
    ("negative expert id", _vllm_with(1, 0, 1, -1), ("req.npy: token 1, MoE layer 1", "-1")),
    ("duplicate ids in a token", _vllm_with(0, 1, 1, 0), ("req.npy: token 0, MoE layer 2",)),
    ("empty request (0 tokens)", np.zeros((0, 2, 2), np.int16), ("req.npy: empty request",)),
]:
    CASES.append(Case(VLLM, _name, _expect, _vllm(_arr)))
CASES.append(Case(VLLM, "empty .npz archive", ("req.npz: archive holds no arrays",),
                  _vllm({}, "req.npz")))
CASES.append(Case(VLLM, ".npz with one bad request", ("req.npz[b]", "shape [3, 2]"),
                  _vllm({"a": _vllm_ok(), "b": np.zeros((3, 2), np.int16)}, "req.npz")))


@case(VLLM, "truncated .npy", "req.npy", "cannot read the array")
def _(d: Path) -> Thunk:
    np.save(d / "req.npy", _vllm_ok(50))
    data = (d / "req.npy").read_bytes()
    (d / "req.npy").write_bytes(data[: len(data) // 2])
    return _import("vllm", d / "req.npy", d)


@case(VLLM, "folder without arrays", "reqs", "holds no .npy or .npz files")
def _(d: Path) -> Thunk:
    (d / "reqs").mkdir()
    return _import("vllm", d / "reqs", d)


TABLE = "long routing table (CSV/Parquet)"


def _table_frame() -> pd.DataFrame:
    rows = [(t, layer, r, (t + r + layer) % 8) for t in range(3) for layer in (1, 2)
            for r in range(2)]
    return pd.DataFrame(rows, columns=["token", "layer", "rank", "expert"])


def _table(edit: Callable[[pd.DataFrame], pd.DataFrame], name: str = "routes.csv"
           ) -> Callable[[Path], Thunk]:
    def setup(d: Path) -> Thunk:
        df = edit(_table_frame())
        p = d / name
        if name.endswith(".csv"):
            df.to_csv(p, index=False)
        else:
            df.to_parquet(p, index=False)
        return _import("table", p, d)

    return setup


def _register_table(name: str, edit: Callable[[pd.DataFrame], pd.DataFrame], *expect: str,
                    file: str = "routes.csv") -> None:
    CASES.append(Case(TABLE, name, (file, *expect), _table(edit, file)))


def _tcell(row: int, col: str, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({col: float}) if isinstance(value, float) else df
        df.loc[row, col] = value
        return df

    return edit


_register_table("column 'expert' missing", lambda df: df.drop(columns="expert"),
                "column(s) expert missing")
_register_table("unknown column", lambda df: df.assign(colour=1), "unknown column(s) colour")
_register_table("tokens not sorted", lambda df: df.iloc[::-1], "line", "token")
_register_table("expert id out of range", _tcell(5, "expert", 8), "line 7", "token 1",
                "expert 8 out of range")
_register_table("duplicate (token, layer, rank)", _tcell(1, "rank", 0), "token 0")
_register_table("NaN expert (empty CSV cell)",
                lambda df: df.astype({"expert": "Int64"}).assign(
                    expert=lambda f: f["expert"].mask(f.index == 2)),
                "line 4", "'expert' is empty")
_register_table("NaN gate", lambda df: df.assign(gate=[0.5] * 11 + [float("nan")]), "line 13",
                "gate")
_register_table("layer that is not a MoE layer", _tcell(0, "layer", 5), "layer 5")
_register_table("Parquet: NaN gate", lambda df: df.assign(gate=[0.5] * 11 + [float("nan")]),
                "row 11", "gate", file="routes.parquet")
_register_table("header only (no rows)", lambda df: df.iloc[:0], "no rows")
_register_table("Parquet: float expert column", lambda df: df.astype({"expert": float}),
                "column 'expert' has type double", file="routes.parquet")
_register_table("Parquet: column 'token' missing", lambda df: df.drop(columns="token"),
                "column(s) token missing", file="routes.parquet")
_register_table("Parquet: out-of-range expert", _tcell(5, "expert", 99), "row 5",
                "99", file="routes.parquet")


@case(TABLE, "unknown file type", "routes.txt", "expected a .csv")
def _(d: Path) -> Thunk:
    (d / "routes.txt").write_text("token,layer,rank,expert\n")
    return _import("table", d / "routes.txt", d)


@case(TABLE, "expert id as text", "routes.csv", "cannot read the table")
def _(d: Path) -> Thunk:
    df = _table_frame().astype({"expert": object})
    df.loc[3, "expert"] = "e3"
    df.to_csv(d / "routes.csv", index=False)
    return _import("table", d / "routes.csv", d)


# ---------------------------------------------------------------------------------------------
# Load statistics Parquet: traces.load_stats.load_load_stats

LSTATS = "load statistics (Parquet)"


def _stats_file(d: Path, edit: Callable[[pa.Table], pa.Table] | None = None) -> Path:
    counts = np.arange(16, dtype=float).reshape(2, 8)
    p = save_load_stats(d / "stats.parquet", LoadStats(model=TOY, counts=counts, source="x"))
    if edit is not None:
        t = pq.read_table(p)
        new = edit(t)
        pq.write_table(new if new.schema.metadata else new.replace_schema_metadata(
            t.schema.metadata), p)
    return p


def _stats_col(col: str, values: Any) -> Callable[[pa.Table], pa.Table]:
    def edit(t: pa.Table) -> pa.Table:
        arr = pa.array(values)
        return t.set_column(t.schema.get_field_index(col), pa.field(col, arr.type), arr)

    return edit


def _register_stats(name: str, edit: Callable[[pa.Table], pa.Table] | None, *expect: str,
                    model: ModelSpec | None = None) -> None:
    def setup(d: Path) -> Thunk:
        p = _stats_file(d, edit)
        return lambda: load_load_stats(p, model)

    CASES.append(Case(LSTATS, name, ("stats.parquet", *expect), setup))


@case(LSTATS, "missing file", "nope.parquet", "not found")
def _(d: Path) -> Thunk:
    return lambda: load_load_stats(d / "nope.parquet")


@case(LSTATS, "empty file", "stats.parquet", "not a readable")
def _(d: Path) -> Thunk:
    (d / "stats.parquet").write_bytes(b"")
    return lambda: load_load_stats(d / "stats.parquet")


@case(LSTATS, "truncated file", "stats.parquet", "not a readable")
def _(d: Path) -> Thunk:
    p = _stats_file(d)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return lambda: load_load_stats(p)


@case(LSTATS, "Parquet without metadata", "stats.parquet", "neither moe-netsim load statistics")
def _(d: Path) -> Thunk:
    pd.DataFrame({"layer": [1], "expert": [0], "count": [1.0]}).to_parquet(d / "stats.parquet")
    return lambda: load_load_stats(d / "stats.parquet")


_register_stats("metadata not JSON", lambda t: t.replace_schema_metadata(
    {LOAD_STATS_KEY: b"{oops"}), "metadata is damaged")
_register_stats("statistics of another model", None, "not 'tiny'", model=ModelSpec(
    "tiny", (1, 2, 3), 8, 0, 2, 16))
_register_stats("a row missing", lambda t: t.slice(0, 15), "expected 16 rows")
_register_stats("expert id out of range", _stats_col("expert", [0, 1, 2, 3, 4, 5, 6, 99] + list(
    range(8))), "row 7: expert 99 out of range 0..7")
_register_stats("a (layer, expert) row repeated", _stats_col("expert", [0] * 2 + list(
    range(2, 8)) + list(range(8))), "row 1: (layer 1, expert 0) appears twice")
_register_stats("layer that is not a MoE layer", _stats_col("layer", [7] * 8 + [2] * 8),
                "row 0: layer 7 is not a MoE layer")
_register_stats("NaN count", _stats_col("count", [1.0] * 15 + [float("nan")]), "row 15",
                "count nan")
_register_stats("negative count", _stats_col("count", [1.0] * 15 + [-2.0]), "row 15",
                "count -2.0")
_register_stats("column 'count' missing", lambda t: t.drop(["count"]), "column 'count' missing")
_register_stats("count as text", _stats_col("count", ["1"] * 16), "column 'count'",
                "must hold numbers")
