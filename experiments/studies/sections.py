"""How each section of a study cell (``[model]``, ``[topology]``, ``[strategy]``, ``[sim]``)
becomes a typed spec, with errors that name the user's key (checked against annotations)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from placement import SolverOptions
from simulator.cluster.builders import LinkDefaults
from simulator.cluster.families import BUILDERS
from simulator.cluster.presets import PRESETS
from simulator.config import SimConfig
from simulator.traffic_config import REPLACED_OPTIONS, TrafficConfig
from traces import MODEL_PRESETS, ModelSpec, model_preset
from traces.infra.errors import InputError
from traces.infra.records import (
    build_record,
    check_keys,
    field_hints,
    type_name,
    typed_fields,
    typed_value,
)

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
        kwargs["defaults"] = build_record(LinkDefaults, links, f"{where}.links")
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
    return build_record(ModelSpec, {"name": "custom", **model}, where,
                        "; give 'preset' or the full geometry")


def split_sim_options(sim: Mapping[str, Any], where: str = "sim") -> SimConfig:
    """Flat ``[sim]`` keys into a SimConfig (TrafficConfig fields go to its ``traffic``)."""
    sim_hints = field_hints(SimConfig)
    sim_hints.pop("traffic", None)
    traffic_hints = field_hints(TrafficConfig)
    for old, (new, value) in REPLACED_OPTIONS.items():
        if old in sim:
            raise InputError(f"{where}.{old} was replaced: give {where}.{new} = {value!r}")
    typed_fields(sim, {**sim_hints, **traffic_hints}, where)  # one message for either table
    traffic = {k: v for k, v in sim.items() if k in traffic_hints}
    rest = {k: v for k, v in sim.items() if k in sim_hints}
    if not rest and not traffic:
        return SimConfig()
    t = build_record(TrafficConfig, traffic, where)
    return build_record(SimConfig, {**rest, "traffic": t}, where)


def solver_options(
    strategy: Mapping[str, Any], seed: int, where: str = "strategy"
) -> SolverOptions:
    opts = dict(strategy.get("options", {}))
    if not isinstance(opts, dict):
        raise InputError(f"{where}.options: expected a table")
    opts.setdefault("seed", seed)
    return build_record(SolverOptions, opts, f"{where}.options")


def expect_int(v: Any, where: str, minimum: int) -> int:
    v = typed_value(int, v, where)
    if v < minimum:
        raise InputError(f"{where}: must be >= {minimum}, got {v}")
    return v


def check_table(d: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a table, got {d!r} ({type_name(d)})")
    check_keys(d, known, where)
    return d
