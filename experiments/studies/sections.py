"""How each section of a study cell (``[model]``, ``[topology]``, ``[strategy]``, ``[sim]``)
becomes a typed spec, with errors that name the user's key (checked against annotations)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from placement import SolverOptions
from simulator.cluster.builders import LinkDefaults
from simulator.cluster.families import BUILDERS
from simulator.cluster.presets import PRESETS
from simulator.config import SimConfig
from simulator.traffic import REPLACED_OPTIONS, TrafficConfig
from traces import MODEL_PRESETS, ModelSpec, model_preset
from traces.infra.errors import InputError

# ---------------------------------------------------------------------------------------------
# type checks against annotations


def type_name(v: Any) -> str:
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


def key_text(k: Any) -> str:
    """A user's key for a one-line message: as written, or quoted when it holds odd characters."""
    return k if isinstance(k, str) and k.isprintable() else repr(k)


def _check_fields(
    values: Mapping[str, Any], hints: Mapping[str, Any], known: list[str], where: str
) -> None:
    for key, v in values.items():
        if key not in known:
            raise InputError(
                f"{where}.{key_text(key)}: unknown key; known:"
                f" {', '.join(sorted(known)) or '(none)'}"
            )
        ok = _accepts(hints.get(key, Any), v)
        if ok is False:
            raise InputError(
                f"{where}.{key}: expected {_describe(hints[key])}, got {v!r} ({type_name(v)})"
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
    InputErrors listing the valid ones), so families added later need nothing here.  A named
    preset (``simulator.cluster.presets``) may stand for the family, without params or links.
    """
    family = topology.get("family")
    if isinstance(family, str) and family in PRESETS:
        extra = sorted(k for k in ("params", "links") if topology.get(k))
        if extra:
            raise InputError(
                f"{where}: preset {family} has fixed numbers; drop {', '.join(extra)} or use"
                f" its family {PRESETS[family].family}"
            )
        return PRESETS[family].build()
    family = registered_name(family, {**BUILDERS, **PRESETS}, "topology family or preset",
                             f"{where}.family")
    kwargs: dict[str, Any] = dict(topology.get("params", {}))
    links = dict(topology.get("links", {}))
    if links:
        kwargs["defaults"] = _build(LinkDefaults, links, f"{where}.links")
    try:
        cluster = BUILDERS[family](**kwargs)
    except InputError as exc:
        raise InputError(f"{where}.params: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {family}: {exc}") from None
    return with_whatif(cluster, topology, where)


def with_whatif(cluster: Any, topology: Mapping[str, Any], where: str = "topology") -> Any:
    """The cluster after the section's ``fail`` and ``degrade`` lists (``topology whatif``'s
    elements, :mod:`simulator.cluster.failures`); unchanged when both are empty."""
    from simulator.cluster.failures import apply_whatif, parse_whatif

    fail, degrade = topology.get("fail", []), topology.get("degrade", [])
    if not fail and not degrade:
        return cluster
    whatif = parse_whatif(fail, degrade, f"{where}.fail", f"{where}.degrade")
    return apply_whatif(cluster, whatif, where).cluster


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
    for old, (new, value) in REPLACED_OPTIONS.items():
        if old in sim:
            raise InputError(f"{where}.{old} was replaced: give {where}.{new} = {value!r}")
    _check_fields(sim, {**sim_hints, **traffic_hints}, known, where)
    traffic = {k: v for k, v in sim.items() if k in traffic_hints}
    rest = {k: v for k, v in sim.items() if k in sim_hints}
    t = _build(TrafficConfig, traffic, where)
    return _build(SimConfig, {**rest, "traffic": t}, where) if rest or traffic else SimConfig()


def solver_options(
    strategy: Mapping[str, Any], seed: int, where: str = "strategy"
) -> SolverOptions:
    opts = dict(strategy.get("options", {}))
    if not isinstance(opts, dict):
        raise InputError(f"{where}.options: expected a table")
    opts.setdefault("seed", seed)
    return _build(SolverOptions, opts, f"{where}.options")


def expect_int(v: Any, where: str, minimum: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{where}: expected an integer, got {v!r} ({type_name(v)})")
    if v < minimum:
        raise InputError(f"{where}: must be >= {minimum}, got {v}")
    return v


def check_table(d: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a table, got {d!r} ({type_name(d)})")
    for k in d:
        if k not in known:
            raise InputError(f"{where}.{key_text(k)}: unknown key; known: {', '.join(known)}")
    return d
