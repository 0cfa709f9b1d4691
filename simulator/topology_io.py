"""Cluster descriptions to and from JSON files (users describe their own clusters this way).

JSON layout::

    {"format": "moe-netsim-cluster", "version": 1, "name": ..., "description": ...,
     "nodes": [{"name": "s0", "kind": "server"}, {"name": "s0.g0", "kind": "gpu",
               "server": "s0"}, {"name": "sw", "kind": "switch", "tier": "edge"}, ...],
     "links": [{"a": "s0.g0", "b": "s0", "bandwidth_bytes_per_s": 4.5e11,
                "latency_s": 5e-7, "weight": 0, "tier": "nvlink"}, ...]}
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from simulator.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.atomic import atomic_write_text
from traces.errors import InputError
from traces.jsonfile import read_json_file


def cluster_to_dict(cluster: ClusterSpec) -> dict[str, Any]:
    return {
        "format": "moe-netsim-cluster",
        "version": 1,
        "name": cluster.name,
        "description": cluster.description,
        "nodes": [asdict(n) for n in cluster.nodes],
        "links": [asdict(lk) for lk in cluster.links],
    }


def _has_type(value: Any, annotation: str) -> bool:
    """JSON value against a NodeSpec/LinkSpec field annotation (float, int or a string type)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if annotation == "float":
        return isinstance(value, numbers.Real)
    if annotation == "int":
        return isinstance(value, numbers.Integral)
    return isinstance(value, str)


def _records(d: dict[str, Any], key: str, cls: type, where: str) -> tuple:
    items = d.get(key)
    if not isinstance(items, list):
        raise InputError(f"{where}: '{key}' must be a list")
    known = {f.name for f in fields(cls)}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"{where}: {key}[{i}] must be an object")
        unknown = set(item) - known
        if unknown:
            raise InputError(f"{where}: {key}[{i}] has unknown keys {sorted(unknown)}")
        for f in fields(cls):
            required = f.default is MISSING and f.default_factory is MISSING
            if required and f.name not in item:
                raise InputError(f"{where}: {key}[{i}] lacks the required key {f.name!r}")
            if f.name in item and not _has_type(item[f.name], str(f.type)):
                want = {"float": "a number", "int": "an integer"}.get(str(f.type), "a string")
                raise InputError(
                    f"{where}: {key}[{i}] field {f.name!r} must be {want},"
                    f" got {item[f.name]!r}"
                )
            if str(f.type) == "float" and f.name in item:
                try:
                    item = {**item, f.name: float(item[f.name])}
                except OverflowError:
                    raise InputError(
                        f"{where}: {key}[{i}] field {f.name!r} is too large"
                    ) from None
        try:
            out.append(cls(**item))
        except TypeError as exc:
            raise InputError(f"{where}: {key}[{i}]: {exc}") from None
    return tuple(out)


def cluster_from_dict(d: Any, where: str = "cluster") -> ClusterSpec:
    if not isinstance(d, dict) or d.get("format") != "moe-netsim-cluster":
        raise InputError(f"{where}: not a moe-netsim cluster description ('format' missing)")
    if d.get("version") != 1:
        raise InputError(f"{where}: unsupported cluster format version {d.get('version')!r}")
    unknown = set(d) - {"format", "version", "name", "description", "nodes", "links"}
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}")
    nodes = _records(d, "nodes", NodeSpec, where)
    links = _records(d, "links", LinkSpec, where)
    try:
        return ClusterSpec(
            name=str(d.get("name", "cluster")),
            nodes=nodes,
            links=links,
            description=str(d.get("description", "")),
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def save_cluster(cluster: ClusterSpec, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, json.dumps(cluster_to_dict(cluster), indent=1) + "\n")


def load_cluster(path: str | os.PathLike[str]) -> ClusterSpec:
    d = read_json_file(path, "topology file")
    return cluster_from_dict(d, where=str(Path(path)))
