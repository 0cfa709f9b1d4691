"""Study files: the base configuration of one cell, the axes that vary it, the factorial grid.

A study (TOML file or a built-in definition) is a *base* configuration plus *axes*.  The base
has the sections below; every axis names a dotted path into the base (``"topology.params.k"``,
``"strategy.name"``, ``"seed"``) and lists the values it takes.  Axes joined by a comma
(``"model.preset, topology"``) vary together: each value is a list with one entry per path.
The grid is the factorial product of the axes, in the order the file lists them (the last axis
varies fastest).  Each cell is validated into typed specs before any work starts; a bad key,
type, empty axis or impossible combination raises :class:`InputError` naming the key.

Base sections (every key optional unless said otherwise)::

    seed = 0                         # trace generation and solver seed
    [study]    name, description, baseline ("round-robin")
    [model]    preset = "deepseek-moe-16b"   or the ModelSpec fields of a custom geometry
    [topology] family = "fat-tree"  (required), params = {...} (the builder's keyword
               arguments), links = {...} (LinkDefaults fields: bandwidths, latencies, GPUs),
               fail = [...] and degrade = [...] (what-ifs: "link:A~B", "switch:NAME",
               "server:NAME"; "link:A~B=FACTOR"), e.g. an axis topology.fail = [[], [...]]
    [strategy]   name = "ilp-load", options = {...} (SolverOptions fields)
    [trace]    source = "synthetic" | path of a native trace file
               fit_source = "" (fit on the source's first fit_tokens, replay the next
               replay_tokens) | path of a native trace | path of SGLang load statistics (.json)
               fit_tokens, replay_tokens,
               seq_len, zipf_exponent (synthetic only), origins = "" (an origin model
               MODEL[:ARGS] of traces.origins applied to every trace of the cell; "":
               the trace's recorded origins, else dp), tenants = 0 (synthetic only: that
               many equal workloads, each with its own expert popularity, on its own
               contiguous block of servers), label (free text naming the scenario)
    [sim]      SimConfig and TrafficConfig fields (flat)
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.studies.cell_checks import validate_cell
from experiments.studies.estimates import cell_work
from experiments.study_trace import TRACE_DEFAULTS
from traces.infra.errors import InputError
from traces.infra.limits import CellWork
from traces.infra.records import key_text, type_name

TOP_KEYS = ("seed", "study", "model", "topology", "strategy", "trace", "sim", "rebalance", "axes")
DEFAULT_BASE: dict[str, Any] = {
    "seed": 0,
    "study": {"name": "study", "description": "", "baseline": "round-robin"},
    "model": {},  # empty: deepseek-moe-16b for synthetic traces, the file's model otherwise
    "topology": {"family": "fat-tree", "params": {}, "links": {}},
    "strategy": {"name": "ilp-load", "options": {}},
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
    work: CellWork  # its cost before it runs (experiments.studies.estimates)


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
    def strategies(self) -> set[str]:
        """The strategy labels of the cells (the ``strategy`` column of the results)."""
        return strategy_labels(self.cells)


def strategy_labels(cells: tuple[Cell, ...] | list[Cell]) -> set[str]:
    return {c.config["strategy"].get("label", c.config["strategy"]["name"]) for c in cells}


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


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


# Study keys and sections that were renamed: old path -> (new path, what else to know).  A
# file (or an axis path) using an old one gets a one-line error naming the new one.
RENAMED_KEYS = {
    "trace.micro_batch_tokens": ("sim.microbatch_tokens", "leave it out for the trace's own steps"),
    "placer": ("strategy", "the section [strategy], axis paths strategy.name, strategy.options"),
}


def _has_path(raw: dict[str, Any], path: str) -> bool:
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def _check_renamed(raw: dict[str, Any], where: str) -> None:
    axes = raw.get("axes")
    axis_paths = [p.strip() for k in axes for p in str(k).split(",")] \
        if isinstance(axes, dict) else []
    for old, (new, hint) in RENAMED_KEYS.items():
        if _has_path(raw, old) or any(p == old or p.startswith(old + ".") for p in axis_paths):
            raise InputError(f"{where}: {old} was renamed {new} ({hint})")


def _merge_base(raw: dict[str, Any], where: str) -> dict[str, Any]:
    _check_renamed(raw, where)
    base = copy.deepcopy(DEFAULT_BASE)
    for key, value in raw.items():
        if key == "axes":
            continue
        if key not in TOP_KEYS:
            raise InputError(
                f"{where}: {key_text(key)}: unknown key; known: {', '.join(TOP_KEYS)}"
            )
        if key == "seed":
            base["seed"] = value
        elif key == "model":
            if not isinstance(value, dict):
                raise InputError(f"{where}: model: expected a table")
            base["model"] = copy.deepcopy(value)  # a custom geometry replaces the preset
        else:
            if not isinstance(value, dict):
                raise InputError(f"{where}: {key}: expected a table, got {type_name(value)}")
            base.setdefault(key, {}).update(copy.deepcopy(value))  # rebalance: optional
    return base


_VALID_PATH_ROOTS = ("seed", "study", "model", "topology", "strategy", "trace", "sim", "rebalance")


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
        facts = validate_cell(cfg, f"{where} ({label})")
        cell_id = f"{index:05d}-{_digest(cfg)[:10]}"
        cells.append(Cell(index, cell_id, tuple(values), cfg, cell_work(cfg, facts)))
    definition = {"base": base, "axes": [[paths, rows] for paths, rows in axes]}
    strategies = strategy_labels(cells)
    baseline = str(base["study"].get("baseline", "round-robin"))
    if baseline not in strategies and "baseline" in raw.get("study", {}):
        raise InputError(
            f"{where}: study.baseline: {baseline!r} names no strategy of the study (strategies:"
            f" {', '.join(sorted(strategies))}); the reductions would all be empty"
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

