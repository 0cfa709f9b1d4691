"""Study files: the base configuration of one cell, the axes that vary it, the factorial grid.

A study (TOML file or a built-in definition) is a *base* configuration plus *axes*.  The base
has the sections below; every axis names a dotted path into the base (``"topology.params.k"``,
``"placer.name"``, ``"seed"``) and lists the values it takes.  Axes joined by a comma
(``"model.preset, topology"``) vary together: each value is a list with one entry per path.
The grid is the factorial product of the axes, in the order the file lists them (the last axis
varies fastest).  Each cell is validated into typed specs before any work starts; a bad key,
type, empty axis or impossible combination raises :class:`InputError` naming the key.

Base sections (every key optional unless said otherwise)::

    seed = 0                         # trace generation and solver seed
    [study]    name, description, baseline ("round-robin")
    [model]    preset = "deepseek-moe-16b"   or the ModelSpec fields of a custom geometry
    [topology] family = "fat-tree"  (required), params = {...} (the builder's keyword
               arguments), links = {...} (LinkDefaults fields: bandwidths, latencies, GPUs)
    [placer]   name = "ilp-load", options = {...} (SolverOptions fields)
    [trace]    source = "synthetic" | path of a native trace file
               fit_source = "" (fit on the source's first fit_tokens, replay the next
               replay_tokens) | path of a native trace | path of SGLang load statistics (.json)
               fit_tokens, replay_tokens,
               seq_len, zipf_exponent (synthetic only)
    [sim]      SimConfig and TrafficConfig fields (flat)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placement import STRATEGIES, SolverOptions
from placement.strategies import SUPPORTS
from simulator.cluster.builders import LinkDefaults
from simulator.cluster.families import BUILDERS
from simulator.config import SimConfig
from simulator.traffic import TrafficConfig
from traces import MODEL_PRESETS, ModelSpec, model_preset, read_trace_meta
from traces.infra.errors import InputError
from traces.load_stats import load_load_stats, load_stats_kind

TOP_KEYS = ("seed", "study", "model", "topology", "placer", "trace", "sim", "axes")
STUDY_KEYS = ("name", "description", "baseline")
TOPOLOGY_KEYS = ("family", "params", "links")
PLACER_KEYS = ("name", "options", "replicas", "balance_eps", "label")
TRACE_DEFAULTS: dict[str, Any] = {
    "source": "synthetic",
    "fit_source": "",
    "fit_tokens": 2048,
    "replay_tokens": 2048,
    "seq_len": 1,  # one token per sequence: origins (sequence mod GPUs) spread evenly
    "zipf_exponent": 0.9,
}
# Options of the synthetic generator that a study may not set (the cell decides them).
DEFAULT_BASE: dict[str, Any] = {
    "seed": 0,
    "study": {"name": "study", "description": "", "baseline": "round-robin"},
    "model": {},  # empty: deepseek-moe-16b for synthetic traces, the file's model otherwise
    "topology": {"family": "fat-tree", "params": {}, "links": {}},
    "placer": {"name": "ilp-load", "options": {}},
    "trace": dict(TRACE_DEFAULTS),
    "sim": {},
}


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its position, its axis values and its full configuration."""

    index: int
    cell_id: str
    axis_values: tuple[tuple[str, Any], ...]
    config: dict[str, Any]


@dataclass(frozen=True)
class Study:
    """A validated study: the normalised definition and every cell of its grid."""

    name: str
    description: str
    baseline: str
    definition: dict[str, Any]  # base + axes, JSON-able (recorded in the run directory)
    axes: tuple[str, ...]  # axis paths, in grid order (linked axes split into their paths)
    cells: tuple[Cell, ...]
    skipped: tuple[str, ...] = ()  # built-in studies: grid entries left out, and why

    def fingerprint(self) -> str:
        return _digest({"definition": self.definition, "skipped": list(self.skipped)})

    @property
    def placers(self) -> set[str]:
        """The placer labels of the cells (the ``placer`` column of the results)."""
        return placer_labels(self.cells)


def placer_labels(cells: tuple[Cell, ...] | list[Cell]) -> set[str]:
    return {c.config["placer"].get("label", c.config["placer"]["name"]) for c in cells}


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# type checks against annotations


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _accepts(annotation: Any, v: Any) -> bool | None:
    """True/False when the annotation is a simple type; None when it cannot be judged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(a, v) for a in typing.get_args(annotation)]
        if any(x is True for x in verdicts):
            return True
        return None if any(x is None for x in verdicts) else False
    if annotation is type(None):
        return v is None
    if annotation is bool:
        return isinstance(v, bool)
    if annotation is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if annotation is float:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if annotation is str:
        return isinstance(v, str)
    if origin in (tuple, list) or annotation in (tuple, list):
        return isinstance(v, list | tuple)
    return None


def _key(k: Any) -> str:
    """A user's key for a one-line message: as written, or quoted when it holds odd characters."""
    return k if isinstance(k, str) and k.isprintable() else repr(k)


def _check_fields(
    values: Mapping[str, Any], hints: Mapping[str, Any], known: list[str], where: str
) -> None:
    for key, v in values.items():
        if key not in known:
            raise InputError(
                f"{where}.{_key(key)}: unknown key; known: {', '.join(sorted(known)) or '(none)'}"
            )
        ok = _accepts(hints.get(key, Any), v)
        if ok is False:
            raise InputError(
                f"{where}.{key}: expected {_describe(hints[key])}, got {v!r} ({_type_name(v)})"
            )


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_describe(a) for a in parts)
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, str(annotation)
    )


def _dataclass_hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = _dataclass_hints(cls)
    _check_fields(values, hints, list(hints), where)
    converted = {
        k: (float(v) if hints[k] is float and isinstance(v, int) else v) for k, v in values.items()
    }
    try:
        return cls(**converted)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# registries (looked up by name, so entries added later work)


def registered_name(value: Any, registry: Mapping[str, Any], what: str, where: str) -> str:
    """``value`` if it names an entry of ``registry``; otherwise an error listing the names."""
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string naming a {what}")
    if value not in registry:
        raise InputError(
            f"{where}: unknown {what} {value!r}; known: {', '.join(sorted(registry))}"
        )
    return value


def build_cluster(topology: Mapping[str, Any], where: str = "topology") -> Any:
    """``BUILDERS[family](**params, defaults=LinkDefaults(**links))``, errors naming keys.

    The family object validates its own parameters (unknown names and wrong types are
    InputErrors listing the valid ones), so families added later need nothing here.
    """
    family = registered_name(topology.get("family"), BUILDERS, "topology family",
                             f"{where}.family")
    kwargs: dict[str, Any] = dict(topology.get("params", {}))
    links = dict(topology.get("links", {}))
    if links:
        kwargs["defaults"] = _build(LinkDefaults, links, f"{where}.links")
    try:
        return BUILDERS[family](**kwargs)
    except InputError as exc:
        raise InputError(f"{where}.params: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {family}: {exc}") from None


DEFAULT_MODEL = "deepseek-moe-16b"


def model_from_config(model: Mapping[str, Any], where: str = "model") -> ModelSpec:
    if not model:
        return model_preset(DEFAULT_MODEL)
    if "preset" in model:
        extra = sorted(set(model) - {"preset"})
        if extra:
            raise InputError(f"{where}.{extra[0]}: a preset model takes no other keys")
        if not isinstance(model["preset"], str):
            raise InputError(f"{where}.preset: expected a string")
        if model["preset"] not in MODEL_PRESETS:
            raise InputError(
                f"{where}.preset: unknown model preset {model['preset']!r}; known:"
                f" {', '.join(sorted(MODEL_PRESETS))}"
            )
        return model_preset(model["preset"])
    d = dict(model)
    if "moe_layer_indices" in d and isinstance(d["moe_layer_indices"], list):
        d["moe_layer_indices"] = tuple(d["moe_layer_indices"])
    d.setdefault("name", "custom")
    hints = _dataclass_hints(ModelSpec)
    hints["moe_layer_indices"] = tuple
    _check_fields(d, hints, list(hints), where)
    if any(not isinstance(x, int) or isinstance(x, bool) for x in d.get("moe_layer_indices", ())):
        raise InputError(f"{where}.moe_layer_indices: expected a list of integers")
    try:
        return ModelSpec(**d)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise InputError(f"{where}: {exc}; give 'preset' or the full geometry") from None


def split_sim_options(sim: Mapping[str, Any], where: str = "sim") -> SimConfig:
    """Flat ``[sim]`` keys into a SimConfig (TrafficConfig fields go to its ``traffic``)."""
    sim_hints = _dataclass_hints(SimConfig)
    sim_hints.pop("traffic", None)
    traffic_hints = _dataclass_hints(TrafficConfig)
    known = list(sim_hints) + list(traffic_hints)
    _check_fields(sim, {**sim_hints, **traffic_hints}, known, where)
    traffic = {k: v for k, v in sim.items() if k in traffic_hints}
    rest = {k: v for k, v in sim.items() if k in sim_hints}
    t = _build(TrafficConfig, traffic, where)
    return _build(SimConfig, {**rest, "traffic": t}, where) if rest or traffic else SimConfig()


def solver_options(placer: Mapping[str, Any], seed: int, where: str = "placer") -> SolverOptions:
    opts = dict(placer.get("options", {}))
    if not isinstance(opts, dict):
        raise InputError(f"{where}.options: expected a table")
    opts.setdefault("seed", seed)
    return _build(SolverOptions, opts, f"{where}.options")


# ---------------------------------------------------------------------------------------------
# validation of one cell


def _expect_int(v: Any, where: str, minimum: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{where}: expected an integer, got {v!r} ({_type_name(v)})")
    if v < minimum:
        raise InputError(f"{where}: must be >= {minimum}, got {v}")
    return v


def _check_table(d: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a table, got {d!r} ({_type_name(d)})")
    for k in d:
        if k not in known:
            raise InputError(f"{where}.{_key(k)}: unknown key; known: {', '.join(known)}")
    return d


def _resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def validate_cell(config: dict[str, Any], where: str = "study") -> dict[str, Any]:
    """Check one cell's configuration completely; return facts the runner reuses.

    Builds the model, the cluster, the solver and simulator options and reads the metadata of
    any trace file, so a cell that passes cannot fail on its configuration later.
    """
    seed = _expect_int(config.get("seed"), f"{where}: seed", 0)
    _check_table(config["study"], f"{where}: study", STUDY_KEYS)
    topo = _check_table(config["topology"], f"{where}: topology", TOPOLOGY_KEYS)
    for sub in ("params", "links"):
        if not isinstance(topo.get(sub, {}), dict):
            raise InputError(f"{where}: topology.{sub}: expected a table")
    placer = _check_table(config["placer"], f"{where}: placer", PLACER_KEYS)
    trace = _check_table(config["trace"], f"{where}: trace", tuple(TRACE_DEFAULTS))
    if not isinstance(config["sim"], dict):
        raise InputError(f"{where}: sim: expected a table")
    if not isinstance(config["model"], dict):
        raise InputError(f"{where}: model: expected a table")

    registered_name(placer.get("name"), STRATEGIES, "placement strategy",
                    f"{where}: placer.name")
    if "replicas" in placer and placer["replicas"] != "auto":
        _expect_int(placer["replicas"], f"{where}: placer.replicas", 0)
    if "balance_eps" in placer:
        eps = placer["balance_eps"]
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1e6:
            raise InputError(f"{where}: placer.balance_eps: expected a number > 0, got {eps!r}")
    wants = {"replicas": placer.get("replicas") not in (None, 0),
             "balance": placer.get("balance_eps") is not None}
    for what, asked in wants.items():
        if asked and what not in SUPPORTS[placer["name"]]:
            key = "replicas" if what == "replicas" else "balance_eps"
            raise InputError(f"{where}: placer.{key}: strategy {placer['name']} does not support"
                             " it; drop the key for this placer or use another strategy")
    if "label" in placer and not isinstance(placer["label"], str):
        raise InputError(f"{where}: placer.label: expected a string")
    solver_options(placer, seed, f"{where}: placer")
    sim = split_sim_options(config["sim"], f"{where}: sim")
    cluster = build_cluster(topo, f"{where}: topology")

    for key in ("fit_tokens", "replay_tokens"):
        _expect_int(trace[key], f"{where}: trace.{key}", 1)
    _expect_int(trace["seq_len"], f"{where}: trace.seq_len", 1)
    z = trace["zipf_exponent"]
    if not isinstance(z, int | float) or isinstance(z, bool) or not 0 <= z < 1e6:
        raise InputError(f"{where}: trace.zipf_exponent: expected a number >= 0, got {z!r}")
    for key in ("source", "fit_source"):
        if not isinstance(trace[key], str):
            raise InputError(f"{where}: trace.{key}: expected a string")

    source = trace["source"]
    fit_source = trace["fit_source"]
    model: ModelSpec | None = None
    if source == "synthetic":
        model = model_from_config(config["model"], f"{where}: model")
    else:
        path = Path(source)
        if path.suffix == ".json" or path.is_file() and load_stats_kind(path) != "trace":
            raise InputError(
                f"{where}: trace.source: {path} looks like load statistics, which hold no tokens"
                " to replay; give them as trace.fit_source and replay a trace or 'synthetic'"
            )
        meta, n = _trace_meta(path, f"{where}: trace.source")
        model = meta.model
        if config["model"]:
            given = model_from_config(config["model"], f"{where}: model")
            if given != model:
                raise InputError(
                    f"{where}: model: {given.name!r} differs from the model of trace.source"
                    f" {path} ({model.name!r}); leave [model] out when replaying a file"
                )
        need = trace["replay_tokens"] + (0 if fit_source else trace["fit_tokens"])
        if n < need:
            raise InputError(
                f"{where}: trace.source: {path} has {n} tokens but fit_tokens + replay_tokens"
                f" = {need}; lower them or give a longer trace"
            )
    if fit_source:
        fpath = Path(fit_source)
        if not fpath.is_file():
            raise InputError(f"{where}: trace.fit_source: {fpath}: file not found")
        if load_stats_kind(fpath) != "trace":
            try:
                load_load_stats(fpath, model)
            except InputError as exc:
                raise InputError(f"{where}: trace.fit_source: {exc}") from None
        else:
            fmeta, fn = _trace_meta(fpath, f"{where}: trace.fit_source")
            if fmeta.model != model:
                raise InputError(
                    f"{where}: trace.fit_source: {fpath} is a {fmeta.model.name!r} trace but the"
                    f" replayed model is {model.name!r}"
                )
            if fn < trace["fit_tokens"]:
                raise InputError(
                    f"{where}: trace.fit_source: {fpath} has {fn} tokens, fewer than"
                    f" trace.fit_tokens = {trace['fit_tokens']}"
                )
    return {"model": model, "cluster": cluster, "sim": sim}


def _trace_meta(path: Path, where: str) -> tuple[Any, int]:
    if not path.is_file():
        raise InputError(f"{where}: {path}: trace file not found")
    try:
        return read_trace_meta(path)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# the grid


def _get(d: dict[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        cur = cur[part]
    return cur


def _set(d: dict[str, Any], path: str, value: Any, where: str) -> None:
    parts = path.split(".")
    cur: Any = d
    for i, part in enumerate(parts[:-1]):
        if part not in cur:
            cur[part] = {}
        if not isinstance(cur[part], dict):
            raise InputError(f"{where}: {'.'.join(parts[: i + 1])} is not a table")
        cur = cur[part]
    cur[parts[-1]] = copy.deepcopy(value)


# Study keys that were renamed: the old path gives a one-line error naming the new one.
RENAMED_KEYS = {"trace.micro_batch_tokens": "sim.microbatch_tokens"}


def _check_renamed(raw: dict[str, Any], where: str) -> None:
    axes = raw.get("axes")
    axis_paths = [p.strip() for k in axes for p in str(k).split(",")] \
        if isinstance(axes, dict) else []
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        table = raw.get(section)
        if (isinstance(table, dict) and key in table) or old in axis_paths:
            raise InputError(f"{where}: {old} was renamed {new} (leave it out for the trace's"
                             " own steps)")


def _merge_base(raw: dict[str, Any], where: str) -> dict[str, Any]:
    _check_renamed(raw, where)
    base = copy.deepcopy(DEFAULT_BASE)
    for key, value in raw.items():
        if key == "axes":
            continue
        if key not in TOP_KEYS:
            raise InputError(
                f"{where}: {_key(key)}: unknown key; known: {', '.join(TOP_KEYS)}"
            )
        if key == "seed":
            base["seed"] = value
        elif key == "model":
            if not isinstance(value, dict):
                raise InputError(f"{where}: model: expected a table")
            base["model"] = copy.deepcopy(value)  # a custom geometry replaces the preset
        else:
            if not isinstance(value, dict):
                raise InputError(f"{where}: {key}: expected a table, got {_type_name(value)}")
            base[key].update(copy.deepcopy(value))
    return base


_VALID_PATH_ROOTS = ("seed", "study", "model", "topology", "placer", "trace", "sim")


def _axes(raw: dict[str, Any], where: str) -> list[tuple[list[str], list[list[Any]]]]:
    axes = raw.get("axes", {})
    if not isinstance(axes, dict):
        raise InputError(f"{where}: axes: expected a table of lists")
    out = []
    for key, values in axes.items():
        paths = [p.strip() for p in key.split(",")]
        for p in paths:
            if not p or p.split(".")[0] not in _VALID_PATH_ROOTS:
                raise InputError(
                    f"{where}: axes.{key!r}: {p!r} must start with one of"
                    f" {', '.join(_VALID_PATH_ROOTS)}"
                )
            if p.startswith("axes") or p == "study.name":
                raise InputError(f"{where}: axes.{key!r}: {p!r} cannot be varied")
        if not isinstance(values, list):
            raise InputError(f"{where}: axes.{key!r}: expected a list of values")
        if not values:
            raise InputError(f"{where}: axes.{key!r}: empty axis (give at least one value)")
        rows = []
        for i, v in enumerate(values):
            if len(paths) == 1:
                rows.append([v])
            else:
                if not isinstance(v, list) or len(v) != len(paths):
                    raise InputError(
                        f"{where}: axes.{key!r}[{i}]: linked axis needs a list of"
                        f" {len(paths)} values ({', '.join(paths)})"
                    )
                rows.append(list(v))
        seen = set()
        for i, r in enumerate(rows):
            k = json.dumps(r, sort_keys=True, default=str)
            if k in seen:
                raise InputError(f"{where}: axes.{key!r}[{i}]: duplicate value {r!r}")
            seen.add(k)
        out.append((paths, rows))
    all_paths = [p for paths, _ in out for p in paths]
    for p in all_paths:
        for q in all_paths:
            if p != q and (q.startswith(p + ".")):
                raise InputError(f"{where}: axes: {q!r} lies inside {p!r}; vary one of them")
    if len(set(all_paths)) != len(all_paths):
        dup = next(p for p in all_paths if all_paths.count(p) > 1)
        raise InputError(f"{where}: axes: {dup!r} is varied by two axes")
    return out


def _axis_label(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def build_study(
    raw: dict[str, Any], where: str = "study", base_dir: Path | None = None,
    skipped: tuple[str, ...] = (),
) -> Study:
    """Validate a study definition (parsed TOML) and expand its grid."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a table")
    base = _merge_base(raw, where)
    axes = _axes(raw, where)
    base_dir = base_dir or Path.cwd()

    def absolutise(cfg: dict[str, Any]) -> None:
        for key in ("source", "fit_source"):
            v = cfg["trace"].get(key)
            if isinstance(v, str) and v and v != "synthetic":
                cfg["trace"][key] = str(_resolve_path(v, base_dir))

    cells = []
    combos = itertools.product(*[rows for _, rows in axes]) if axes else [()]
    paths_flat = [p for paths, _ in axes for p in paths]
    for index, combo in enumerate(combos):
        cfg = copy.deepcopy(base)
        values: list[tuple[str, Any]] = []
        for (paths, _), row in zip(axes, combo, strict=True):
            for p, v in zip(paths, row, strict=True):
                _set(cfg, p, v, f"{where}: axes.{p!r}")
                values.append((p, v))
        absolutise(cfg)
        label = ", ".join(f"{p}={_axis_label(v)}" for p, v in values) or "the single cell"
        validate_cell(cfg, f"{where} ({label})")
        cell_id = f"{index:05d}-{_digest(cfg)[:10]}"
        cells.append(Cell(index, cell_id, tuple(values), cfg))
    definition = {"base": base, "axes": [[paths, rows] for paths, rows in axes]}
    placers = placer_labels(cells)
    baseline = str(base["study"].get("baseline", "round-robin"))
    if baseline not in placers and "baseline" in raw.get("study", {}):
        raise InputError(
            f"{where}: study.baseline: {baseline!r} names no placer of the study (placers:"
            f" {', '.join(sorted(placers))}); the reductions would all be empty"
        )
    return Study(
        name=str(base["study"].get("name", "study")),
        description=str(base["study"].get("description", "")),
        baseline=str(base["study"].get("baseline", "round-robin")),
        definition=json.loads(json.dumps(definition, default=str)),
        axes=tuple(paths_flat),
        cells=tuple(cells),
        skipped=skipped,
    )


def load_study_file(path: Path) -> Study:
    """Read and validate a TOML study file (paths inside it are relative to the file); an
    empty file is refused (it would run the default study without a word)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: study file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if not raw:
        raise InputError(f"{path}: the study file is empty; give at least [topology] or [axes]")
    return build_study(raw, where=str(path), base_dir=path.resolve().parent)

