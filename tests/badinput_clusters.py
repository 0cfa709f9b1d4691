"""Bad-input cases: cluster JSON, layouts, placement problems, synthetic-trace knobs.

Registered into ``badinput.CASES`` on import (``tests/badinput.py`` imports every case module
in catalogue order).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from badinput import (
    CASES,
    TINY,
    Case,
    Thunk,
    _cluster_dict,
    case,
    cli_case,
    tiny_trace,
)

from placement import PlacementProblem, SolverOptions, solve_placement
from placement.layout_io import load_layout
from simulator.cluster.io import cluster_from_dict, load_cluster
from simulator.cluster.paths import build_route_table
from simulator.engine import simulate
from traces import SynthConfig

# ---------------------------------------------------------------------------------------------
# Cluster JSON: simulator.cluster.io.load_cluster (validate_cluster, build_route_table)

CLUSTER = "cluster JSON"



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
_register_cluster("node with an unknown key", _node(1, colour="red"),
                  "nodes[1].colour: unknown key")
_register_cluster("node without a name", lambda c: c["nodes"][1].pop("name"), "nodes[1]",
                  "required key 'name'")
_register_cluster("node name not a string", _node(1, name=5), "nodes[1].name", "string")
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
                  "links[0].bandwidth_bytes_per_s", "number")
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
_register_synth("drift ramps overlap",
                lambda: SynthConfig(TINY, 800, step_tokens=10, phase_steps=(5, 8),
                                    drift_ramp_steps=4), "closer than the drift ramp")
_register_synth("unknown popularity curve", lambda: SynthConfig(TINY, 8, curve="pareto"),
                "unknown popularity curve 'pareto'")
cli_case("trace synth --drift-every 0",
         ["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "100", "--drift-every",
          "0", "--out", "{dir}/s.parquet"], "--drift-every", ">= 1",
         must_not_exist=("s.parquet",))
cli_case("trace synth --phase-change after the last step",
         ["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "100", "--phase-change",
          "9", "--out", "{dir}/s.parquet"], "phase change at step 9", "last step (0)",
         must_not_exist=("s.parquet",))
cli_case("trace synth --fit a missing file",
         ["trace", "synth", "--fit", "{dir}/none.parquet", "--tokens", "100",
          "--out", "{dir}/s.parquet"], "none.parquet", must_not_exist=("s.parquet",))
cli_case("trace concat of one trace",
         ["trace", "concat", "{dir}/a.parquet", "--out", "{dir}/c.parquet"],
         "at least two traces", must_not_exist=("c.parquet",))


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
