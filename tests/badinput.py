"""The bad-input catalogue: every input the tool reads, broken in every way we know.

Each :class:`Case` builds one broken input in a fresh directory and returns a thunk that feeds
it to the library function that reads it.  ``tests/test_bad_input.py`` runs every case and
checks that it raises :class:`InputError` (nothing else), with a one-line message holding the
``expect`` fragments (what and where), and that nothing new is left in the directory.  CLI
cases (``argv``) go through ``moe-netsim`` and must exit with code 2 and one line on stderr.

Adding a case for a new input is one call to :func:`case` (or :func:`cli_case`).  The error
catalogue docs/reference/errors.md is generated from this list (``make docs``, see
``tests/error_catalogue.py``), and ``tests/test_bad_input.py`` fails when the page and a case's
message disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.studies.spec import load_study_file
from placement import PlacementProblem, SolverOptions, solve_placement
from placement.layout_io import load_layout
from simulator.cluster.io import cluster_from_dict, cluster_to_graphml, load_cluster
from simulator.cluster.paths import build_route_table
from simulator.engine import simulate
from traces import ModelSpec, RoutingTrace, SynthConfig, TraceMeta, model_preset
from traces.importers import import_trace
from traces.io import META_KEY, read_trace, read_trace_meta, write_trace
from traces.load_stats import (
    LOAD_STATS_KEY,
    LoadStats,
    load_load_stats,
    read_sglang_logical_count,
    save_load_stats,
)

Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One broken input.  ``setup(dir)`` writes files and returns the call that must fail."""

    input: str
    name: str
    expect: tuple[str, ...]
    setup: Callable[[Path], Thunk] | None = None
    argv: tuple[str, ...] = ()  # CLI case: arguments, "{dir}" is the case directory
    subprocess: bool = False  # also run this CLI case as `python -m experiments` (slow)
    must_not_exist: tuple[str, ...] = field(default=())  # CLI outputs that must not appear

    @property
    def id(self) -> str:
        return f"{self.input}: {self.name}"

    @property
    def is_cli(self) -> bool:
        return self.setup is None


CASES: list[Case] = []


def case(input: str, name: str, *expect: str) -> Callable[[Callable[[Path], Thunk]], Any]:
    """Decorator registering ``setup`` as a library-level case."""

    def register(setup: Callable[[Path], Thunk]) -> Callable[[Path], Thunk]:
        CASES.append(Case(input, name, tuple(expect), setup=setup))
        return setup

    return register


def cli_case(
    name: str, argv: list[str], *expect: str, subprocess: bool = False,
    must_not_exist: tuple[str, ...] = (),
) -> None:
    CASES.append(
        Case("command line", name, tuple(expect), argv=tuple(argv), subprocess=subprocess,
             must_not_exist=must_not_exist)
    )


# ---------------------------------------------------------------------------------------------
# Builders of valid inputs that the cases then break.

TINY = ModelSpec("tiny", (1, 2), 8, 0, 2, 16)


def tiny_trace(n: int = 6) -> RoutingTrace:
    experts = np.stack([np.arange(n) % 8, (np.arange(n) + 1) % 8], axis=1)  # distinct pairs
    return RoutingTrace(
        meta=TraceMeta(model=TINY, source="badinput"),
        experts=np.repeat(experts[:, None, :], 2, axis=1).astype(np.uint8),
        seq_id=np.arange(n, dtype=np.int64),
        position=np.zeros(n, dtype=np.int32),
        origin_gpu=np.zeros(n, dtype=np.int32),
        step=np.zeros(n, dtype=np.int32),
    )


def valid_trace_file(d: Path, name: str = "trace.parquet") -> Path:
    return write_trace(d / name, tiny_trace())


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def _with_meta(d: Path, meta: dict[str, Any] | str, name: str = "trace.parquet") -> Path:
    p = valid_trace_file(d, name)
    t = pq.read_table(p)
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    _rewrite(p, t.replace_schema_metadata({META_KEY: raw.encode()}))
    return p


def _meta_dict(**model_changes: Any) -> dict[str, Any]:
    d = json.loads(TraceMeta(model=TINY).to_json())
    d["model"].update(model_changes)
    return d


def _with_column(d: Path, col: str, values: pa.Array, name: str = "trace.parquet") -> Path:
    p = valid_trace_file(d, name)
    t = pq.read_table(p)
    i = t.schema.get_field_index(col)
    t = t.set_column(i, pa.field(col, values.type), values)
    _rewrite(p, t.replace_schema_metadata(pq.read_schema(p).metadata))
    return p


def _experts_column(rows: list[list[int]] | list[list[int] | None], fixed: bool = True) -> pa.Array:
    if fixed:
        return pa.array(rows, type=pa.list_(pa.uint8(), 2))
    return pa.array(rows, type=pa.list_(pa.uint8()))


def _read(p: Path) -> Thunk:
    return lambda: read_trace(p)


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


@case(TRACE, "model spec with an unknown key", "trace.parquet", "unknown keys ['colour']")
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


@case(MODEL, "not an object", "model spec", "object")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict([1, 2])  # type: ignore[arg-type]


@case(MODEL, "unknown key", "unknown keys ['experts']")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(experts=8))


@case(MODEL, "required key missing", "model spec", "'top_k'", "missing")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(top_k=_DROP))


@case(MODEL, "count given as a string", "model spec", "'num_routed_experts'", "integer")
def _(d: Path) -> Thunk:
    return lambda: ModelSpec.from_dict(_spec(num_routed_experts="64"))


@case(MODEL, "layer indices not a list", "model spec", "'moe_layer_indices'", "list")
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


# ---------------------------------------------------------------------------------------------
# Cluster JSON: simulator.cluster.io.load_cluster (validate_cluster, build_route_table)

CLUSTER = "cluster JSON"


def _cluster_dict() -> dict[str, Any]:
    """Two servers of two GPUs behind one switch."""
    nodes: list[dict[str, Any]] = [{"name": "sw", "kind": "switch", "tier": "edge"}]
    links: list[dict[str, Any]] = []
    for s in range(2):
        nodes.append({"name": f"s{s}", "kind": "server"})
        links.append({"a": f"s{s}", "b": "sw", "bandwidth_bytes_per_s": 5e10})
        for g in range(2):
            nodes.append({"name": f"s{s}.g{g}", "kind": "gpu", "server": f"s{s}"})
            links.append({"a": f"s{s}.g{g}", "b": f"s{s}", "bandwidth_bytes_per_s": 4.5e11,
                          "weight": 0.0, "tier": "nvlink"})
    return {"format": "moe-netsim-cluster", "version": 1, "name": "c", "nodes": nodes,
            "links": links}


def _cluster(d: Path, obj: Any, route: bool = False) -> Thunk:
    p = d / "cluster.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    if route:
        return lambda: build_route_table(load_cluster(p))
    return lambda: load_cluster(p)


def _cluster_with(edit: Callable[[dict[str, Any]], None], route: bool = False) -> Callable:
    def setup(d: Path) -> Thunk:
        c = _cluster_dict()
        edit(c)
        return _cluster(d, c, route)

    return setup


def _register_cluster(name: str, edit: Callable[[dict[str, Any]], None], *expect: str,
                      route: bool = False) -> None:
    # Route building sees a ClusterSpec, not the file: its messages name the cluster instead.
    where = "cluster 'c'" if route else "cluster.json"
    CASES.append(Case(CLUSTER, name, (where, *expect), _cluster_with(edit, route)))


@case(CLUSTER, "missing file", "nope.json", "not found")
def _(d: Path) -> Thunk:
    return lambda: load_cluster(d / "nope.json")


@case(CLUSTER, "a directory, not a file", "cdir.json", "cannot read")
def _(d: Path) -> Thunk:
    (d / "cdir.json").mkdir()
    return lambda: load_cluster(d / "cdir.json")


@case(CLUSTER, "empty file", "cluster.json", "not valid JSON")
def _(d: Path) -> Thunk:
    return _cluster(d, "")


@case(CLUSTER, "truncated JSON", "cluster.json", "not valid JSON", "line 1")
def _(d: Path) -> Thunk:
    return _cluster(d, json.dumps(_cluster_dict())[:100])


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.__setitem__(key, value)


def _node(i: int, **kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["nodes"][i].update(kv)


def _link(i: int, **kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["links"][i].update(kv)


_register_cluster("wrong 'format'", _set("format", "graphml"), "not a moe-netsim cluster")
_register_cluster("unsupported version", _set("version", 2), "unsupported cluster format version 2")
_register_cluster("unknown top-level key", _set("switches", []), "unknown keys ['switches']")
_register_cluster("'nodes' not a list", _set("nodes", {"a": 1}), "'nodes' must be a list")
_register_cluster("a node is not an object", _set("nodes", ["s0"]), "nodes[0] must be an object")
_register_cluster("node with an unknown key", _node(1, colour="red"), "nodes[1]", "['colour']")
_register_cluster("node without a name", lambda c: c["nodes"][1].pop("name"), "nodes[1]",
                  "required key 'name'")
_register_cluster("node name not a string", _node(1, name=5), "nodes[1]", "'name'", "string")
_register_cluster("unknown node kind", _node(0, kind="router"), "unknown kind 'router'")
_register_cluster("duplicate node name", _node(4, name="s0.g0"), "duplicate node name 's0.g0'")
_register_cluster("empty node name", _node(0, name=""), "non-empty string name")
_register_cluster("GPU outside any server", _node(2, server="s9"), "'s0.g0' is not inside")
_register_cluster("GPU whose 'server' is a switch", _node(2, server="sw"), "'s0.g0' is not inside")
_register_cluster("no GPUs", lambda c: c.update(nodes=[n for n in c["nodes"] if n["kind"] != "gpu"],
                  links=[lk for lk in c["links"] if "." not in lk["a"]]), "has no GPUs")
_register_cluster("link to an unknown node", _link(0, b="sw9"), "unknown node 'sw9'")
_register_cluster("link from a node to itself", _link(0, b="s0"), "connects a node to itself")
_register_cluster("duplicate link", lambda c: c["links"].append(dict(c["links"][0])),
                  "duplicate link #6 (s0-sw)")
_register_cluster("zero bandwidth", _link(0, bandwidth_bytes_per_s=0),
                  "(s0-sw): bandwidth_bytes_per_s must be a finite number > 0")
_register_cluster("negative bandwidth", _link(0, bandwidth_bytes_per_s=-1e9),
                  "bandwidth_bytes_per_s must be a finite number > 0")
_register_cluster("NaN bandwidth", _link(0, bandwidth_bytes_per_s=float("nan")),
                  "bandwidth_bytes_per_s must be a finite number > 0")
_register_cluster("bandwidth as a string", _link(0, bandwidth_bytes_per_s="400G"),
                  "links[0]", "'bandwidth_bytes_per_s'", "number")
_register_cluster("link without bandwidth", lambda c: c["links"][0].pop("bandwidth_bytes_per_s"),
                  "links[0]", "required key 'bandwidth_bytes_per_s'")
_register_cluster("negative latency", _link(0, latency_s=-1e-6),
                  "latency_s must be a finite number >= 0")
_register_cluster("infinite weight", _link(0, weight=float("inf")),
                  "weight must be a finite number >= 0")
_register_cluster("disconnected server", lambda c: c["links"].pop(3), "is unreachable")
_register_cluster("GPU without a link to its server", lambda c: c["links"].pop(1),
                  "GPU 's0.g0' must be linked to its server 's0'")
_register_cluster("GPU linked to a switch, not its server (routes)",
                  lambda c: c["links"].append({"a": "s0.g0", "b": "sw",
                                               "bandwidth_bytes_per_s": 1e9}),
                  "'s0.g0' must be linked to its server", route=True)


@case(CLUSTER, "cluster_from_dict of a list", "cluster", "not a moe-netsim cluster")
def _(d: Path) -> Thunk:
    return lambda: cluster_from_dict([1, 2])


# ---------------------------------------------------------------------------------------------
# Layout tables: placement.layout_io.load_layout (2 MoE layers 1, 2; 4 experts; 2 GPUs)

LAYOUT = "layout table (CSV/Parquet)"


def _layout_frame() -> pd.DataFrame:
    rows = [(layer, e, 0, e % 2) for layer in (1, 2) for e in range(4)]
    return pd.DataFrame(rows, columns=["layer", "expert", "replica", "gpu"])


def _layout(d: Path, df: pd.DataFrame | str, name: str = "layout.csv") -> Thunk:
    p = d / name
    if isinstance(df, str):
        p.write_text(df)
    elif p.suffix == ".csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p, index=False)
    return lambda: load_layout(p, 2, 4, 2, (1, 2))


def _layout_with(edit: Callable[[pd.DataFrame], pd.DataFrame], name: str = "layout.csv"
                 ) -> Callable[[Path], Thunk]:
    return lambda d: _layout(d, edit(_layout_frame()), name)


def _register_layout(name: str, edit: Callable[[pd.DataFrame], pd.DataFrame], *expect: str,
                     file: str = "layout.csv") -> None:
    CASES.append(Case(LAYOUT, name, (file, *expect), _layout_with(edit, file)))


def _cell(row: int, col: str, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({col: object}) if not isinstance(value, int) else df
        df.loc[row, col] = value
        return df

    return edit


@case(LAYOUT, "missing file", "nope.csv", "not found")
def _(d: Path) -> Thunk:
    return lambda: load_layout(d / "nope.csv", 2, 4, 2)


@case(LAYOUT, "empty file", "layout.csv", "cannot read layout")
def _(d: Path) -> Thunk:
    return _layout(d, "")


@case(LAYOUT, "not Parquet", "layout.parquet", "cannot read layout")
def _(d: Path) -> Thunk:
    return _layout(d, "layer,expert\n", "layout.parquet")


_register_layout("column 'gpu' missing", lambda df: df.drop(columns="gpu"), "'gpu' missing")
_register_layout("header only (no rows)", lambda df: df.iloc[:0], "no rows")
_register_layout("gpu as text", _cell(3, "gpu", "g1"), "'gpu' must hold integers")
_register_layout("empty gpu cell (NaN)", _cell(3, "gpu", None), "'gpu' must hold integers")
_register_layout("fractional gpu", _cell(3, "gpu", 1.5), "'gpu' must hold integers")
_register_layout("layer that is not a MoE layer", _cell(0, "layer", 7),
                 "layer 7 is not a MoE layer")
_register_layout("expert id out of range", _cell(2, "expert", 4),
                 "row 2: expert 4 out of range 0..3")
_register_layout("negative expert id", _cell(2, "expert", -1), "row 2: expert -1 out of range")
_register_layout("GPU out of range", _cell(5, "gpu", 2), "row 5: gpu 2 out of range 0..1")
_register_layout("negative replica", _cell(5, "replica", -1), "negative replica")
_register_layout("replica index beyond the GPU count", _cell(5, "replica", 2**40),
                 "row 5: replica 1099511627776 out of range 0..1")
_register_layout("an expert listed twice", lambda df: pd.concat([df, df.iloc[[3]]]),
                 "(layer, expert, replica) appears twice")
_register_layout("an expert missing", lambda df: df.drop(index=6), "expert 2", "has no GPU")
_register_layout("Parquet with float ids", lambda df: df.astype({"expert": float}),
                 "'expert' must hold integers", file="layout.parquet")


# ---------------------------------------------------------------------------------------------
# Placement problems: placement.PlacementProblem, SolverOptions, solve_placement

PLACE = "placement problem"
_D2 = np.array([[0.0, 1.0], [1.0, 0.0]])
_ACT = np.array([[0.5, 0.5, 0.5, 0.5]])  # 1 layer x 4 experts, top-2


def _problem(**kw: Any) -> Thunk:
    args: dict[str, Any] = dict(distance=_D2, gpu_server=np.array([0, 1]), activation=_ACT,
                                slots_per_gpu=2, max_per_gpu_per_layer=2)
    args.update(kw)
    return lambda: PlacementProblem(**args)


def _register_place(name: str, thunk: Thunk, *expect: str, prefix: str = "placement: ") -> None:
    CASES.append(Case(PLACE, name, (prefix, *expect), lambda d: thunk))


_register_place("too few slots in total", _problem(slots_per_gpu=1),
                "2 GPUs x 1 slots = 2 cannot hold", "raise slots_per_gpu to at least 2")
_register_place("too few slots per layer", _problem(max_per_gpu_per_layer=1),
                "raise max_per_gpu_per_layer to at least 2")
_register_place("zero slots", _problem(slots_per_gpu=0), "must be >= 1")
_register_place("NaN activation", _problem(activation=np.array([[0.5, np.nan, 0.5, 0.5]])),
                "activation row 0", "NaN")
_register_place("negative activation", _problem(activation=np.array([[0.5, -0.1, 0.5, 0.5]])),
                "activation row 0", "negative")
_register_place("activation not 2-D", _problem(activation=np.array([0.5, 0.5])),
                "activation must be [layers, experts]")
_register_place("distance matrix not square", _problem(distance=np.zeros((2, 3))),
                "must be square")
_register_place("distance for 3 GPUs, servers for 2", _problem(distance=np.zeros((3, 3))),
                "distance matrix is for 3 GPUs but server membership lists 2")
_register_place("negative distance", _problem(distance=np.array([[0.0, -1.0], [-1.0, 0.0]])),
                "negative, NaN or infinite")
_register_place("no GPUs", _problem(distance=np.zeros((0, 0)), gpu_server=np.zeros(0, int)),
                "at least one GPU")
_register_place("server index gap", _problem(gpu_server=np.array([0, 2])),
                "server indices must be 0..servers-1")
_register_place("server indices not integers", _problem(gpu_server=np.array([0.0, 1.0])),
                "server", "integers")
_register_place("origin weights all zero", _problem(origin_weight=np.zeros(2)),
                "origin_weight")
_register_place("layer indices do not match rows", _problem(layer_indices=(1, 2)),
                "layer_indices")
_register_place("unknown strategy", lambda: solve_placement(_problem()(), "magic"),
                "unknown placement strategy 'magic'", "known:", prefix="")
_register_place("solver time limit 0", lambda: SolverOptions(time_limit_s=0), "time_limit_s",
                prefix="solver: ")
_register_place("negative solver seed", lambda: SolverOptions(seed=-1), "seed", "got -1",
                prefix="solver: ")


# ---------------------------------------------------------------------------------------------
# Other library inputs that come from users: synthetic-trace knobs, layout vs. cluster in replay

SYNTH = "synthetic trace / replay"


def _register_synth(name: str, thunk: Thunk, *expect: str) -> None:
    CASES.append(Case(SYNTH, name, expect, lambda d: thunk))


_register_synth("negative token count", lambda: SynthConfig(TINY, num_tokens=-1), "num_tokens")
_register_synth("NaN Zipf exponent", lambda: SynthConfig(TINY, 8, zipf_exponent=float("nan")),
                "zipf_exponent")
_register_synth("negative seed", lambda: SynthConfig(TINY, 8, seed=-1), "seed", ">= 0")


def _replay_cluster() -> Any:
    return cluster_from_dict(_cluster_dict())


_register_synth(
    "layout names a GPU outside the cluster",
    lambda: simulate([tiny_trace()], build_route_table(_replay_cluster()),
                     np.full((2, 8), 9, dtype=np.int64)),
    "layout names GPU 9", "0..3",
)
_register_synth(
    "layout shape differs from the trace's model",
    lambda: simulate([tiny_trace()], build_route_table(_replay_cluster()),
                     np.zeros((3, 8), dtype=np.int64)),
    "layout has shape [3, 8]", "2 MoE layers x 8 experts",
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


# ---------------------------------------------------------------------------------------------
# GraphML cluster files: simulator.cluster.io.load_cluster (.graphml)

GRAPHML = "cluster GraphML"


def _graphml_text() -> str:
    return cluster_to_graphml(cluster_from_dict(_cluster_dict()))


def _register_graphml(name: str, edit: Callable[[str], str], *expect: str) -> None:
    def setup(d: Path) -> Thunk:
        p = d / "cluster.graphml"
        text = _graphml_text()
        new = edit(text)
        assert new != text, name
        p.write_text(new)
        return lambda: load_cluster(p)

    CASES.append(Case(GRAPHML, name, ("cluster.graphml", *expect), setup))


def _sub(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    return lambda t: t.replace(old, new, count)


_register_graphml("not XML", lambda t: t[: len(t) // 2], "not valid GraphML XML")
_register_graphml("root is not <graphml>", lambda t: t.replace("<graphml", "<grafml").replace(
    "</graphml>", "</grafml>"), "root element is <grafml>")
_register_graphml("no <graph>", lambda t: re.sub(r"<graph .*</graph>", "", t, flags=re.S),
                  "expected one <graph> element, found 0")
_register_graphml("data with an undeclared key", _sub('key="', 'key="zz'), "has no declared <key>")
_register_graphml("unknown node attribute", lambda t: re.sub(
    r'attr\.name="kind"', 'attr.name="colour"', t, count=1), "unknown node attribute 'colour'")
_register_graphml("node without an id", lambda t: re.sub(r'<node id="[^"]*"', "<node", t,
                                                         count=1), "node #0 has no id")
_register_graphml("bandwidth not a number", lambda t: re.sub(
    r'(<data key="[^"]*">)(4e\+11|[0-9.e+]+)(</data>)', r"\g<1>fast\3", t, count=1),
    "must be float", "'fast'")
_register_graphml("edge to an unknown node", lambda t: re.sub(r'target="[^"]*"', 'target="x9"',
                                                              t, count=1), "unknown node 'x9'")
_register_graphml("negative bandwidth", lambda t: re.sub(
    r'(<data key="[^"]*">)(4e\+11|[0-9][0-9.e+]+)(</data>)', r"\g<1>-1\3", t, count=1),
    "must be a finite number > 0")


@case(GRAPHML, "empty file", "cluster.graphml", "not valid GraphML XML")
def _(d: Path) -> Thunk:
    (d / "cluster.graphml").write_text("")
    return lambda: load_cluster(d / "cluster.graphml")


@case(GRAPHML, "unknown file type", "cluster.xml", "unknown topology file type")
def _(d: Path) -> Thunk:
    (d / "cluster.xml").write_text(_graphml_text())
    return lambda: load_cluster(d / "cluster.xml")


# ---------------------------------------------------------------------------------------------
# Study files (TOML): experiments.studies.spec.load_study_file

STUDY = "study file (TOML)"
STUDY_TOML = """seed = 0
study = { name = "tiny" }
model = { name = "tiny-moe", moe_layer_indices = [1, 2], num_routed_experts = 8, \
num_shared_experts = 0, top_k = 2, hidden_size = 64 }
topology = { family = "fat-tree", params = { k = 4, num_servers = 3 } }
trace = { fit_tokens = 64, replay_tokens = 64 }
[axes]
"placer.name" = ["round-robin", "ilp-load"]
"""


def _register_study(name: str, old: str, new: str, *expect: str) -> None:
    def setup(d: Path) -> Thunk:
        assert old in STUDY_TOML, name
        (d / "study.toml").write_text(STUDY_TOML.replace(old, new, 1))
        return lambda: load_study_file(d / "study.toml")

    CASES.append(Case(STUDY, name, ("study.toml", *expect), setup))


@case(STUDY, "missing file", "nope.toml", "study file not found")
def _(d: Path) -> Thunk:
    return lambda: load_study_file(d / "nope.toml")


_register_study("not TOML", "[axes]", "[axes", "not valid TOML")
_register_study("not TOML (unclosed inline table)", "replay_tokens = 64 }", "replay_tokens = 64",
                "not valid TOML")
_register_study("unknown top-level key", "seed = 0", "seed = 0\nmodle = 1", "modle: unknown key")
_register_study("unknown key with a line break", "seed = 0", 'seed = 0\n"a\\nb" = 1',
                "'a\\nb': unknown key")
_register_study("unknown key in a table", 'name = "tiny"', 'name = "tiny", colour = 1',
                "study.colour")
_register_study("wrong type", "fit_tokens = 64", 'fit_tokens = "64"', "trace.fit_tokens")
_register_study("section given as a number", "seed = 0", "seed = 0\nsim = 3",
                "sim: expected a table, got")
_register_study("empty axis", '"placer.name" = ["round-robin", "ilp-load"]', '"seed" = []',
                "empty axis")
_register_study("axis not a list", '"placer.name" = ["round-robin", "ilp-load"]', '"seed" = 3',
                "expected a list of values")
_register_study("duplicate axis value", '"round-robin", "ilp-load"', '"round-robin", "round-robin"',
                "duplicate value")
_register_study("impossible combination (top_k > experts)",
                '"placer.name" = ["round-robin", "ilp-load"]', '"model.top_k" = [2, 9]', "top_k")
_register_study("impossible combination (servers beyond the fat-tree)",
                '"placer.name" = ["round-robin", "ilp-load"]',
                '"topology.params.num_servers" = [3, 17]', "num_servers=17")
_register_study("unknown placer", '"round-robin", "ilp-load"', '"round-robin", "clairvoyant"',
                "placer.name")
_register_study("axis path outside the study", '"placer.name"', '"colour"', "'colour' must start")


@case(STUDY, "not UTF-8", "study.toml", "not a text file")
def _(d: Path) -> Thunk:
    (d / "study.toml").write_bytes(b"\xff\xfe seed = 0")
    return lambda: load_study_file(d / "study.toml")


# ---------------------------------------------------------------------------------------------
# Command line (moe-netsim ...): exit code 2, one line on stderr, nothing written

cli_case("demo --tokens 0", ["demo", "--out", "{dir}/run", "--tokens", "0"], "--tokens",
         subprocess=True, must_not_exist=("run",))
cli_case("demo --tokens -5", ["demo", "--out", "{dir}/run", "--tokens", "-5"], "--tokens",
         must_not_exist=("run",))
cli_case("demo --tokens not a number", ["demo", "--out", "{dir}/run", "--tokens", "x"],
         "--tokens", "invalid int value", must_not_exist=("run",))
cli_case("demo --seed -1", ["demo", "--out", "{dir}/run", "--seed", "-1"], "--seed", ">= 0",
         must_not_exist=("run",))
cli_case("demo --out exists, no --overwrite", ["demo", "--out", "{dir}/existing"],
         "existing", "--overwrite", subprocess=True)
cli_case("demo --out is a file", ["demo", "--out", "{dir}/afile", "--overwrite"],
         "afile", "not a directory")
cli_case("demo --out inside a file", ["demo", "--out", "{dir}/afile/run"],
         "afile/run: cannot create", "afile is a file")
cli_case("unknown subcommand", ["frobnicate"], "invalid choice: 'frobnicate'", "--help",
         subprocess=True)
cli_case("no subcommand", [], "required: COMMAND", "--help")


# trace import / place / simulate: valid inputs from prepare_cli_dir, one thing wrong each
_IMP = ["trace", "import", "--out", "{dir}/t.parquet"]
cli_case("trace import: input folder missing", [*_IMP, "--format", "esft", "{dir}/nope"],
         "nope: ESFT input must be a folder", must_not_exist=("t.parquet",))
cli_case("trace import: vllm without --model", [*_IMP, "--format", "vllm", "{dir}/req.npy"],
         "does not say which model", "--model", subprocess=True, must_not_exist=("t.parquet",))
cli_case("trace import: unknown --model preset",
         [*_IMP, "--format", "vllm", "{dir}/req.npy", "--model", "gpt-5"],
         "unknown model preset 'gpt-5'", must_not_exist=("t.parquet",))
cli_case("trace import: unknown --format", [*_IMP, "--format", "csv", "{dir}/req.npy"],
         "invalid choice: 'csv'", must_not_exist=("t.parquet",))
cli_case("trace import: bad array (nothing written)",
         [*_IMP, "--format", "vllm", "{dir}/bad.npy", "--model", "{dir}/tiny.json"],
         "bad.npy: dtype float32", must_not_exist=("t.parquet",))
cli_case("trace import: --out not .parquet",
         ["trace", "import", "--out", "{dir}/t.csv", "--format", "vllm", "{dir}/req.npy",
          "--model", "{dir}/tiny.json"], "t.csv: the output must be a .parquet file",
         must_not_exist=("t.csv",))
cli_case("trace import: --out exists",
         ["trace", "import", "--out", "{dir}/trace.parquet", "--format", "vllm",
          "{dir}/req.npy", "--model", "{dir}/tiny.json"], "trace.parquet: output exists",
         "--overwrite")
_PLACE = ["place", "--fat-tree", "4", "2", "--out", "{dir}/layout_out.csv"]
cli_case("place: --stats missing", [*_PLACE, "--stats", "{dir}/nope.parquet"],
         "nope.parquet: load statistics file not found", must_not_exist=("layout_out.csv",))
cli_case("place: --stats not Parquet", [*_PLACE, "--stats", "{dir}/afile"],
         "afile: load statistics are an SGLang logical_count .json",
         must_not_exist=("layout_out.csv",))
cli_case("place: unknown --strategy", [*_PLACE, "--stats", "{dir}/trace.parquet", "--strategy",
                                       "magic"], "invalid choice: 'magic'",
         must_not_exist=("layout_out.csv",))
cli_case("place: --topology missing", ["place", "--topology", "{dir}/nope.json", "--stats",
                                       "{dir}/trace.parquet", "--out", "{dir}/layout_out.csv"],
         "nope.json", "not found", must_not_exist=("layout_out.csv",))
cli_case("place: --per-layer-per-gpu 0", [*_PLACE, "--stats", "{dir}/trace.parquet",
                                          "--per-layer-per-gpu", "0"], "max_per_gpu_per_layer",
         must_not_exist=("layout_out.csv",))
cli_case("place: --slots-per-gpu 0", [*_PLACE, "--stats", "{dir}/trace.parquet",
                                      "--slots-per-gpu", "0"], "slots_per_gpu", ">= 1",
         must_not_exist=("layout_out.csv",))
_SIM = ["simulate", "--trace", "{dir}/trace.parquet", "--topology", "{dir}/cluster.json",
        "--out", "{dir}/run"]
cli_case("simulate: --trace missing", ["simulate", "--trace", "{dir}/nope.parquet", "--topology",
                                       "{dir}/cluster.json", "--layout", "{dir}/layout.csv",
                                       "--out", "{dir}/run"],
         "nope.parquet: trace file not found", subprocess=True, must_not_exist=("run",))
cli_case("simulate: --layout names a GPU outside the cluster",
         [*_SIM, "--layout", "{dir}/layout9.csv"], "layout9.csv", "gpu 9 out of range",
         must_not_exist=("run",))
cli_case("simulate: --topology is not JSON", [*_SIM, "--layout", "{dir}/layout.csv",
                                              "--topology", "{dir}/afile"],
         "afile: unknown topology file type", must_not_exist=("run",))
cli_case("simulate: --chunk-bytes 0", [*_SIM, "--layout", "{dir}/layout.csv", "--chunk-bytes",
                                       "0"], "chunk_bytes", must_not_exist=("run",))
cli_case("simulate: --inflight not a number", [*_SIM, "--layout", "{dir}/layout.csv",
                                               "--inflight", "two"], "--inflight",
         "invalid int value", must_not_exist=("run",))


def prepare_cli_dir(d: Path) -> None:
    """Files the CLI cases refer to: an existing run directory, a plain file and valid inputs
    (a trace, a cluster, a layout, a model JSON, a vLLM array) that one argument then breaks."""
    (d / "existing").mkdir()
    (d / "existing" / "keep.txt").write_text("old run\n")
    (d / "afile").write_text("not a directory\n")
    write_trace(d / "trace.parquet", tiny_trace())
    (d / "cluster.json").write_text(json.dumps(_cluster_dict()))
    (d / "tiny.json").write_text(json.dumps(TINY.to_dict()))
    rows = [(layer, e, e % 4) for layer in (1, 2) for e in range(8)]
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(d / "layout.csv", index=False)
    rows[3] = (1, 3, 9)
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(d / "layout9.csv", index=False)
    np.save(d / "req.npy", tiny_trace().experts.astype(np.int16))
    np.save(d / "bad.npy", tiny_trace().experts.astype(np.float32))


# ---------------------------------------------------------------------------------------------


def run_case(c: Case, d: Path) -> str:
    """Run a library case in ``d``; return its message (InputError) or raise what it raised."""
    from traces.infra.errors import InputError

    assert c.setup is not None
    thunk = c.setup(d)
    try:
        thunk()
    except InputError as exc:
        return str(exc)
    raise AssertionError(f"{c.id}: no InputError raised")


def run_cli_case(c: Case, d: Path) -> tuple[int, str]:
    """Run a CLI case in-process; return (exit code, stderr)."""
    import contextlib
    import io

    from experiments.cli import main

    prepare_cli_dir(d)
    argv = [a.replace("{dir}", str(d)) for a in c.argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def message_of(c: Case) -> str:
    """The message a user sees for the case, with the temporary directory removed."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if c.is_cli:
            _, text = run_cli_case(c, d)
        else:
            text = run_case(c, d)
    text = text.strip().replace(f"{d}/", "").replace(str(d), ".")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args(argv)
    for c in CASES:
        print(c.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
