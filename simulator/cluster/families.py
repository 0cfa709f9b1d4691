"""Topology families by name: ``BUILDERS[name](**params)`` with typed, checked parameters.

Each family wraps a builder of :mod:`simulator.cluster.builders`,
:mod:`~simulator.cluster.dragonfly` or :mod:`~simulator.cluster.nvl72`; its shape parameters'
defaults are the builder's own, its link parameters the :class:`LinkDefaults` fields.  The CLI
(``topology list|show|build``) and study files call builders through this table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from simulator.cluster.builders import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    LinkDefaults,
    build_fat_tree,
    build_fat_tree_sparse,
    build_fat_tree_thinned,
    build_leaf_spine,
    build_rail_optimized,
)
from simulator.cluster.dragonfly import build_dragonfly, build_dragonfly_sparse
from simulator.cluster.nvl72 import SCALE_OUT_FABRICS, build_nvl72
from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError
from traces.infra.limits import check_memory
from traces.infra.options import Range, range_problem
from traces.infra.records import typed_value

# The fewest bytes one node or link of a cluster takes (a frozen dataclass and its name).
BYTES_PER_ELEMENT = 100


@dataclass(frozen=True, slots=True)
class BuilderParam:
    """One parameter of a topology family: name, type, default (``None``: derived), help and
    valid range (``None``: not a number), checked before anything is built.

    A shape parameter's default is the builder function's own (read from its signature), so
    it is written once; a link parameter's range is its :class:`LinkDefaults` field's.  The
    builders check what depends on several parameters (an even ``k``, servers that fit).
    """

    name: str
    type: type
    default: Any
    help: str
    range: Range | None = None


_LINK_PARAMS = tuple(
    BuilderParam(f.name, int if f.type in ("int", int) else float, f.default, f.metadata["help"],
                 f.metadata["range"])
    for f in fields(LinkDefaults)
    if f.default is not MISSING
)


@dataclass(frozen=True)
class TopologyFamily:
    """A builder callable by name with keyword parameters: ``family(**params)``.

    Parameters are the family's shape parameters plus the :class:`LinkDefaults` fields it uses;
    unknown names and values of the wrong type raise :class:`InputError`.  String values (from
    the command line) are converted to the parameter's type.
    """

    name: str
    build: Callable[..., ClusterSpec]
    summary: str
    shape_help: tuple[tuple[str, type, str, Range | None], ...]  # (name, type, help, range)
    servers: Callable[[dict[str, Any]], int]  # servers built for the shape (defaults filled)
    excluded_link_params: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[BuilderParam, ...]:
        """The shape parameters, with the builder's defaults."""
        sig = inspect.signature(self.build).parameters
        return tuple(BuilderParam(n, t, sig[n].default, h, r) for n, t, h, r in self.shape_help)

    @property
    def params(self) -> tuple[BuilderParam, ...]:
        return self.shape + tuple(
            p for p in _LINK_PARAMS if p.name not in self.excluded_link_params
        )

    def __call__(self, defaults: LinkDefaults | None = None, **params: Any) -> ClusterSpec:
        """Build with ``params``; link parameters override ``defaults`` (if given) field by
        field."""
        if defaults is not None and not isinstance(defaults, LinkDefaults):
            raise InputError(f"{self.name}: defaults must be a LinkDefaults, got {defaults!r}")
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InputError(
                f"{self.name}: unknown parameter(s) {unknown}; valid: {sorted(known)}"
            )
        values = {name: _coerce(self.name, known[name], v) for name, v in params.items()}
        for name, value in values.items():
            rng = known[name].range
            problem = None if rng is None or value is None else range_problem(value, rng)
            if problem:
                raise InputError(f"{self.name}: parameter {name} {problem}")
        link_names = {p.name for p in _LINK_PARAMS}
        link = {k: v for k, v in values.items() if k in link_names}
        shape = {k: v for k, v in values.items() if k not in link_names}
        try:
            defaults = replace(defaults, **link) if defaults else LinkDefaults(**link)
        except InputError as exc:
            raise InputError(f"{self.name}: {exc}") from None
        check_memory(self.size_bytes(shape, defaults), f"{self.name} cluster of"
                     f" {self._servers(shape):,} servers", "choose a smaller shape")
        return self.build(**shape, defaults=defaults)

    def _servers(self, shape: dict[str, Any]) -> int:
        filled = {p.name: p.default for p in self.shape} | shape
        return max(0, self.servers(filled))

    def size_bytes(self, shape: dict[str, Any], defaults: LinkDefaults | None = None) -> int:
        """A lower bound on the memory the built cluster takes: every server, GPU and their
        links as one small object each (exact integers, so an absurd shape cannot wrap)."""
        gpus = (defaults or LinkDefaults()).gpus_per_server
        servers = self._servers(shape)
        return BYTES_PER_ELEMENT * servers * (1 + gpus) * 2  # nodes and as many links


def _fat_tree_servers(p: dict[str, Any]) -> int:
    return int(p["num_servers"]) if p["num_servers"] is not None else int(p["k"]) ** 3 // 4


def _dragonfly_servers(p: dict[str, Any]) -> int:
    a, h = int(p["routers_per_group"]), int(p["global_links_per_router"])
    groups = a * h + 1 if p["num_groups"] is None else int(p["num_groups"])
    return groups * a * int(p["servers_per_router"])


def _coerce(family: str, p: BuilderParam, value: Any) -> Any:
    """A parameter's value as its type wants it; text (a GraphML attribute, ``--param k=4``)
    is parsed first, and a whole float is an integer."""
    where = f"{family}: parameter {p.name}"
    if value is None and p.default is None:
        return None
    if isinstance(value, str) and p.type is not str:
        text = value.strip()
        try:
            value = int(text) if p.type is int else float(text)
        except ValueError:
            raise InputError(f"{where}: expected {p.type.__name__}, got {text!r}") from None
    if p.type is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    value = typed_value(p.type, value, where)
    return value.strip() if isinstance(value, str) else value


# Ranges of the shape parameters (one definition each; a builder checks what couples them)
_K = ("k", int, "Switch radix (even): k pods, k/2 edge + k/2 aggregation per pod, (k/2)^2"
      " cores.", Range(2))
_FT_SERVERS = ("num_servers", int, "Servers, filling host slots in order, at most k^3/4"
               " (default: all).", AT_LEAST_ONE)
_SPARSITY = ("sparsity", float, "Fraction of candidate links removed.", Range(0, 1, high_open=True))
_SEED = ("seed", int, "Seed of the removal order (deterministic hash).", Range(0, 2**63 - 1))
_DF = (
    ("routers_per_group", int, "Routers per group (a), fully connected.", AT_LEAST_ONE),
    ("servers_per_router", int, "Servers per router (p).", AT_LEAST_ONE),
    ("global_links_per_router", int, "Global links per router (h).", NON_NEGATIVE),
    ("num_groups", int, "Groups, at most a*h+1 (default: a*h+1, one link per group pair).",
     AT_LEAST_ONE),
)
_OVERSUB = ("oversubscription", float, "Server-facing : spine-facing capacity ratio.", POSITIVE)
_SPINES = ("num_spines", int, "Spine switches.", AT_LEAST_ONE)

BUILDERS: dict[str, TopologyFamily] = {
    f.name: f
    for f in (
        TopologyFamily(
            "fat-tree", build_fat_tree, "k-ary fat tree (non-blocking), partially populated"
            " when fewer servers are asked", (_K, _FT_SERVERS), _fat_tree_servers,
        ),
        TopologyFamily(
            "fat-tree-sparse", build_fat_tree_sparse,
            "fat tree whose edge switches keep a window of aggregation uplinks (longer paths)",
            (_K, _FT_SERVERS, _SPARSITY, _SEED), _fat_tree_servers,
        ),
        TopologyFamily(
            "fat-tree-thinned", build_fat_tree_thinned,
            "fat tree with a fraction of edge-aggregation and aggregation-core links removed",
            (_K, _FT_SERVERS, _SPARSITY, _SEED), _fat_tree_servers,
        ),
        TopologyFamily(
            "dragonfly", build_dragonfly,
            "groups of fully connected routers joined by global links (absolute arrangement)",
            _DF, _dragonfly_servers,
        ),
        TopologyFamily(
            "dragonfly-sparse", build_dragonfly_sparse,
            "dragonfly with a fraction of its global links removed", _DF + (_SPARSITY, _SEED),
            _dragonfly_servers,
        ),
        TopologyFamily(
            "leaf-spine", build_leaf_spine, "two-tier leaf-spine with an oversubscription ratio",
            (
                ("num_servers", int, "Servers.", AT_LEAST_ONE),
                ("servers_per_leaf", int, "Servers per leaf switch.", AT_LEAST_ONE),
                _SPINES,
                _OVERSUB,
            ),
            lambda p: int(p["num_servers"]),
        ),
        TopologyFamily(
            "rail-optimized", build_rail_optimized,
            "GPU i of every server on rail switch i, rails joined by spines",
            (
                ("num_servers", int, "Servers.", AT_LEAST_ONE),
                ("servers_per_group", int, "Servers per group (scalable unit) of rails.",
                 AT_LEAST_ONE),
                _SPINES,
                _OVERSUB,
            ),
            lambda p: int(p["num_servers"]),
            excluded_link_params=("nics_per_server",),
        ),
        TopologyFamily(
            "nvl72", build_nvl72,
            "NVLink racks (GB200 NVL72 class: one NVSwitch domain per rack, trays of GPUs with a"
            " NIC each) joined by a rail-optimized or leaf-spine scale-out fabric",
            (
                ("num_racks", int, "Racks (NVLink domains).", AT_LEAST_ONE),
                ("gpus_per_rack", int, "GPUs per rack, whole trays (NVL72: 72).", AT_LEAST_ONE),
                ("gpus_per_tray", int, "GPUs (and NICs) per compute tray (NVL72: 4).",
                 AT_LEAST_ONE),
                ("nvswitch_bandwidth_bytes_per_s", float,
                 "NVLink per GPU and direction (NVL72: 900 GB/s, 1.8 TB/s both ways).", POSITIVE),
                ("scale_out", str, f"Scale-out fabric: {' or '.join(SCALE_OUT_FABRICS)}.", None),
                ("racks_per_group", int, "rail-optimized: racks sharing rail switches"
                 " (default: all).", AT_LEAST_ONE),
                ("leaves_per_rack", int, "leaf-spine: leaf switches per rack, at most its trays"
                 " (default: 2).", AT_LEAST_ONE),
                _SPINES,
                _OVERSUB,
            ),
            # the size bound counts GPUs / 8 servers of 8 GPUs: fewer nodes than its trays
            lambda p: int(p["num_racks"]) * int(p["gpus_per_rack"]) // 8,
            excluded_link_params=("gpus_per_server", "nics_per_server",
                                  "nvlink_bandwidth_bytes_per_s",
                                  "switch_bandwidth_bytes_per_s"),
        ),
    )
}
