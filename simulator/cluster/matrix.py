"""Clusters from a measured rank-to-rank matrix (``moe-netsim topology import --matrix``).

Input (JSON, SGLang's topology-aware EPLB form extended)::

    {"rank_cost_matrix": [[0, 1, 4], [1, 0, 4], [4, 4, 0]],       # relative costs, or
     "rank_bandwidth_bytes_per_s": [[...]],                       # measured rates, or both
     "rank_latency_s": [[...]],                                   # optional
     "rank_server": [0, 0, 1],                                    # optional machine of a rank
     "name": "...", "description": "..."}

or a CSV file of one numeric matrix (no header), read as costs or bandwidths (``kind``).  Rows
and columns follow the EP rank order; rank r becomes GPU r.  Checks: every matrix square, of
one size, finite; costs >= 0 with a zero diagonal (SGLang's rule); bandwidths > 0 off the
diagonal (the diagonal is not used); latencies >= 0; all symmetric, because a cluster link is
full-duplex with one rate, weight and latency, unless ``symmetrize`` (``mean``, ``min`` or
``max``) says how to make them so.

The cluster: every rank is a one-GPU server node ``rank<r>`` (its GPU ``rank<r>.g0`` on a
link of weight 0 whose rate is the sum of the rank's measured rates, so it never binds before
the pair links do), and every pair of ranks is joined by one link: hop weight = the cost (with
bandwidths only: fastest rate / the pair's rate, so the fastest pair costs 1), rate = the
measured bandwidth (without one: ``default_bandwidth_bytes_per_s``), latency = the measured
one (without: ``default_latency_s``), tier ``intra`` between ranks of one ``rank_server``
machine and ``network`` otherwise; nodes carry the machine as ``group``.  Distances are the
shortest paths over these links: equal to the matrix when it obeys the triangle inequality,
shorter where it does not (then traffic between that pair relays through a third rank;
:func:`relayed_pairs` lists them).  Placement and the simulator see an ordinary cluster.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulator.cluster.builders import LinkDefaults
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError
from traces.infra.jsonfile import read_json_file, read_text_file

SYMMETRIZE = ("mean", "min", "max")
MATRIX_KEYS = ("rank_cost_matrix", "rank_bandwidth_bytes_per_s", "rank_latency_s")
JSON_KEYS = (*MATRIX_KEYS, "rank_server", "name", "description")
CSV_KINDS = ("cost", "bandwidth")


@dataclass(frozen=True, eq=False)
class RankMatrices:
    """Validated matrices of one measurement (``None``: not measured)."""

    cost: np.ndarray | None
    bandwidth_bytes_per_s: np.ndarray | None
    latency_s: np.ndarray | None
    rank_server: np.ndarray  # [ranks] machine of each rank (default: its own)
    name: str = "matrix"
    description: str = ""

    @property
    def num_ranks(self) -> int:
        return int(self.rank_server.shape[0])


def _matrix(value: Any, key: str, where: str) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key} must be a matrix of numbers (a list of rows)") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        shape = "x".join(map(str, m.shape)) if m.ndim else "a scalar"
        raise InputError(f"{where}: {key} must be square (one row and column per rank), got"
                         f" {shape}")
    if not np.isfinite(m).all():
        i, j = np.argwhere(~np.isfinite(m))[0]
        raise InputError(f"{where}: {key}[{i}][{j}] is not a finite number")
    return m


def _symmetric(m: np.ndarray, key: str, how: str | None, where: str) -> np.ndarray:
    if how is None:
        bad = np.argwhere(~np.isclose(m, m.T, rtol=1e-9, atol=0.0))
        if len(bad):
            i, j = bad[0]
            raise InputError(
                f"{where}: {key} is not symmetric: [{i}][{j}] = {m[i, j]:g} but [{j}][{i}] ="
                f" {m[j, i]:g} (a link has one rate, weight and latency both ways; pass"
                f" --symmetrize {'|'.join(SYMMETRIZE)} to choose how to combine them)"
            )
        return (m + m.T) / 2
    if how not in SYMMETRIZE:
        raise InputError(f"{where}: symmetrize must be one of {', '.join(SYMMETRIZE)},"
                         f" got {how!r}")
    return {"mean": (m + m.T) / 2, "min": np.minimum(m, m.T), "max": np.maximum(m, m.T)}[how]


def check_matrices(raw: dict[str, Any], where: str, symmetrize: str | None = None
                   ) -> RankMatrices:
    """Validate a parsed matrix description (module docstring) into :class:`RankMatrices`."""
    unknown = sorted(set(raw) - set(JSON_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; known: {', '.join(JSON_KEYS)}")
    given = {k: _matrix(raw[k], k, where) for k in MATRIX_KEYS if raw.get(k) is not None}
    if "rank_cost_matrix" not in given and "rank_bandwidth_bytes_per_s" not in given:
        raise InputError(f"{where}: needs rank_cost_matrix or rank_bandwidth_bytes_per_s")
    sizes = {k: m.shape[0] for k, m in given.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"{where}: matrices of different sizes: "
                         + ", ".join(f"{k} {n}x{n}" for k, n in sizes.items()))
    n = next(iter(sizes.values()))
    off = ~np.eye(n, dtype=bool)
    cost = given.get("rank_cost_matrix")
    if cost is not None:
        if (cost < 0).any():
            i, j = np.argwhere(cost < 0)[0]
            raise InputError(f"{where}: rank_cost_matrix[{i}][{j}] = {cost[i, j]:g} is"
                             " negative; costs must be >= 0")
        if (np.diag(cost) != 0).any():
            i = int(np.flatnonzero(np.diag(cost) != 0)[0])
            raise InputError(f"{where}: rank_cost_matrix[{i}][{i}] = {cost[i, i]:g}; the"
                             " diagonal must be 0 (a rank reaches itself for free)")
    bw = given.get("rank_bandwidth_bytes_per_s")
    if bw is not None and (bw[off] <= 0).any():
        i, j = np.argwhere((bw <= 0) & off)[0]
        raise InputError(f"{where}: rank_bandwidth_bytes_per_s[{i}][{j}] = {bw[i, j]:g};"
                         " bandwidths must be > 0 between distinct ranks")
    lat = given.get("rank_latency_s")
    if lat is not None and (lat[off] < 0).any():
        i, j = np.argwhere((lat < 0) & off)[0]
        raise InputError(f"{where}: rank_latency_s[{i}][{j}] = {lat[i, j]:g}; latencies must"
                         " be >= 0")
    sym = {k: _symmetric(m, k, symmetrize, where) for k, m in given.items()}
    server = raw.get("rank_server")
    if server is None:
        rank_server = np.arange(n, dtype=np.int64)
    else:
        if (not isinstance(server, list) or len(server) != n
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in server)):
            raise InputError(f"{where}: rank_server must list one machine number >= 0 per"
                             f" rank ({n})")
        rank_server = np.array(server, dtype=np.int64)
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise InputError(f"{where}: {key} must be a string")
    return RankMatrices(
        sym.get("rank_cost_matrix"), sym.get("rank_bandwidth_bytes_per_s"),
        sym.get("rank_latency_s"), rank_server, raw.get("name", "matrix"),
        raw.get("description", ""),
    )


def read_matrices(path: str | Path, symmetrize: str | None = None, kind: str = "cost"
                  ) -> RankMatrices:
    """Read a matrix file: JSON (module docstring) or CSV of one matrix of ``kind``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        raw = read_json_file(p, "matrix file")
        if not isinstance(raw, dict):
            raise InputError(f"{p}: a matrix file is a JSON object with rank_cost_matrix"
                             " and/or rank_bandwidth_bytes_per_s")
        return check_matrices(raw, str(p), symmetrize)
    if suffix == ".csv":
        if kind not in CSV_KINDS:
            raise InputError(f"{p}: --matrix-kind must be one of {', '.join(CSV_KINDS)}")
        rows = [r for r in csv.reader(read_text_file(p, "matrix file").splitlines()) if r]
        try:
            values = [[float(x) for x in r] for r in rows]
        except ValueError as exc:
            raise InputError(f"{p}: not a matrix of numbers ({exc})") from None
        if len({len(r) for r in values}) > 1:
            raise InputError(f"{p}: rows of different lengths; the matrix must be square")
        key = "rank_cost_matrix" if kind == "cost" else "rank_bandwidth_bytes_per_s"
        return check_matrices({key: values, "name": p.stem}, str(p), symmetrize)
    raise InputError(f"{p}: unknown matrix file type {suffix!r}; use .json or .csv")


def _bandwidths(m: RankMatrices, d: LinkDefaults) -> np.ndarray:
    if m.bandwidth_bytes_per_s is not None:
        return m.bandwidth_bytes_per_s
    return np.full((m.num_ranks, m.num_ranks), d.nic_bandwidth_bytes_per_s)


def pair_weights(m: RankMatrices, defaults: LinkDefaults | None = None) -> np.ndarray:
    """Hop weight of the link between every two ranks: the cost, else fastest rate / rate."""
    if m.cost is not None:
        return m.cost
    bw = _bandwidths(m, defaults or LinkDefaults())
    n = m.num_ranks
    fastest = float(bw[~np.eye(n, dtype=bool)].max()) if n > 1 else 1.0
    off = ~np.eye(n, dtype=bool)
    out = np.zeros((n, n))
    out[off] = fastest / bw[off]  # the diagonal is not used (and may be 0)
    return out


def cluster_from_matrices(
    m: RankMatrices, defaults: LinkDefaults | None = None
) -> ClusterSpec:
    """The cluster of a measurement (module docstring)."""
    d = defaults or LinkDefaults()
    n = m.num_ranks
    bw = _bandwidths(m, d)
    weight = pair_weights(m, d)
    lat = m.latency_s if m.latency_s is not None else np.full((n, n), d.network_latency_s)
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    for r in range(n):
        group = int(m.rank_server[r])
        nodes += [NodeSpec(f"rank{r}", "server", group=group),
                  NodeSpec(f"rank{r}.g0", "gpu", server=f"rank{r}", group=group)]
        inject = float(bw[r].sum() - bw[r, r]) if n > 1 else d.nvlink_bandwidth_bytes_per_s
        links.append(LinkSpec(f"rank{r}.g0", f"rank{r}", inject, d.nvlink_latency_s, 0.0,
                              "nvlink"))
    for i in range(n):
        for j in range(i + 1, n):
            tier = "intra" if m.rank_server[i] == m.rank_server[j] else "network"
            links.append(LinkSpec(f"rank{i}", f"rank{j}", float(bw[i, j]), float(lat[i, j]),
                                  float(weight[i, j]), tier))
    what = " and ".join(x for x, v in (("costs", m.cost), ("bandwidths", m.bandwidth_bytes_per_s))
                        if v is not None)
    description = m.description or (
        f"{n} ranks from measured {what}"
        f" ({len(set(m.rank_server.tolist()))} machine(s))"
    )
    return ClusterSpec(m.name, tuple(nodes), tuple(links), description)


def relayed_pairs(cluster: ClusterSpec, m: RankMatrices,
                  defaults: LinkDefaults | None = None) -> list[tuple[int, int, float, float]]:
    """(i, j, direct weight, shortest distance) of the rank pairs whose direct link is not a
    shortest path of ``cluster`` (the matrix breaks the triangle inequality there), worst
    first."""
    from simulator.cluster.paths import gpu_distance_matrix

    direct = pair_weights(m, defaults)
    dist = gpu_distance_matrix(cluster)
    out = [(i, j, float(direct[i, j]), float(dist[i, j]))
           for i in range(m.num_ranks) for j in range(i + 1, m.num_ranks)
           if dist[i, j] < direct[i, j] * (1 - 1e-9) - 1e-12]
    return sorted(out, key=lambda t: (t[3] / t[2], t[0], t[1]))


def describe_relays(relays: list[tuple[int, int, float, float]], ranks: int) -> str:
    """One line for the import's stderr, or empty when every direct link is shortest."""
    if not relays:
        return ""
    i, j, w, dd = relays[0]
    pairs = ranks * (ranks - 1) // 2
    return (f"warning: {len(relays)} of {pairs} rank pairs are nearer through another rank than"
            f" directly (the matrix breaks the triangle inequality; e.g. ranks {i}-{j}: direct"
            f" {w:g}, via others {dd:g}); their traffic relays through third ranks"
            f" ({math.floor(100 * len(relays) / pairs)}% of pairs)")
