"""From routing decisions to GPU-to-GPU traffic (pure numpy; shared by engine and analytic).

A *route* is (token, MoE layer, expert).  Its *origin* is the token's GPU: the trace's
``origin_gpu`` where recorded, otherwise the default origin model ``dp`` of
:mod:`traces.origins` applied to the block (its tokens dealt round-robin over the GPUs); the
commands set every token's origin for the whole trace first (``--origins``).  Its *host* is
the GPU holding the expert; with replicas, the replica nearest to the origin (ties: lowest
replica index).  Shared experts sit on every GPU and cause no traffic.

A *copy* is one token's hidden state on one link.  Which copies a layer moves and through
which NICs is the *dispatch scheme* (``DISPATCH_SCHEMES``, :mod:`simulator.dispatch`);
combine is the mirror image (partial results are summed where the copies fanned out before
they travel back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from simulator.cluster.multipath import DEFAULT_MULTIPATH, MULTIPATH_MODES, check_multipath
from traces.infra.errors import InputError
from traces.infra.options import check_options, option
from traces.model import ModelSpec

if TYPE_CHECKING:
    from simulator.cluster.paths import GpuDistance, RouteTable
    from simulator.cluster.topology import ClusterSpec

SHARED_EXPERTS_NOTE = "shared experts are replicated on every GPU and move no bytes"

DISPATCH_SCHEMES: dict[str, str] = {
    "all-to-all": "one copy per route, GPU pair to GPU pair (NCCL-like; PXN on per-GPU NICs)",
    "deepep-ll": "DeepEP low-latency: one copy per route, direct RDMA NIC to NIC",
    "deepep-normal": "DeepEP normal: one RDMA copy per token and remote server to the GPU of"
    " the same local index (pooled NICs: the server endpoint), then NVLink fan-out",
}
DEFAULT_DISPATCH = "all-to-all"
# options that were replaced: old name -> what to give instead (CLI flags and study keys)
REPLACED_OPTIONS = {"server_dedup": ("dispatch", "deepep-normal")}


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """How many bytes a route moves, which copies the dispatch scheme sends and how the fabric
    spreads them over its paths."""

    dispatch_bytes_per_element: float = option(
        1.0, "Bytes per hidden element sent to the expert (FP8: 1).", "bytes", 0, 1024,
        low_open=True)
    combine_bytes_per_element: float = option(
        2.0, "Bytes per element sent back (BF16: 2).", "bytes", 0, 1024, low_open=True)
    hidden_size: int | None = option(
        None, "Hidden size; default: the trace's model.", "elements", 1, 2**24)
    dispatch: str = field(
        default=DEFAULT_DISPATCH,
        metadata={"help": "Dispatch scheme: " + "; ".join(
            f"{k}: {v}" for k, v in DISPATCH_SCHEMES.items()), "choices": DISPATCH_SCHEMES},
    )
    multipath: str = field(
        default=DEFAULT_MULTIPATH,
        metadata={"help": "How the fabric spreads traffic over equal-cost paths: " + "; ".join(
            f"{k}: {v}" for k, v in MULTIPATH_MODES.items()), "choices": MULTIPATH_MODES},
    )
    flows_per_pair: int | None = option(
        None, "Flows (queue pairs) per GPU pair for multipath 'ecmp' (default 4).", "flows",
        1, 2**16)

    def __post_init__(self) -> None:
        check_options(self, "traffic")
        if self.dispatch not in DISPATCH_SCHEMES:
            raise InputError(
                f"traffic: unknown dispatch scheme {self.dispatch!r}; choose one of"
                f" {', '.join(DISPATCH_SCHEMES)}"
            )
        try:
            check_multipath(self.multipath, self.flows_per_pair)
        except InputError as exc:
            raise InputError(f"traffic: {exc}") from None

    def route_bytes(self, model: ModelSpec) -> tuple[int, int]:
        """(dispatch, combine) bytes of one copy, rounded to whole bytes."""
        hidden = self.hidden_size or model.hidden_size
        out = (
            int(round(hidden * self.dispatch_bytes_per_element)),
            int(round(hidden * self.combine_bytes_per_element)),
        )
        if min(out) < 1:
            raise InputError(
                f"traffic: a copy of hidden size {hidden} would carry {out} (dispatch, combine)"
                " bytes; raise the bytes per element so each copy carries at least one byte"
            )
        return out

    def bytes_bound(self, model: ModelSpec, tokens: int, max_links: int) -> int:
        """The most bytes a replay of ``tokens`` can count on all links together: every route
        of every MoE layer sent and returned over the longest path, in exact integers (a
        caller refuses what an int64 column cannot hold: ``traces.infra.limits.exact_int64``)."""
        dispatch, combine = self.route_bytes(model)
        return tokens * model.num_moe_layers * model.top_k * (dispatch + combine) * max_links

    def check_byte_counts(self, model: ModelSpec, tokens: int, routes: RouteTable,
                          where: str, fix: str = "") -> None:
        """Refuse (InputError naming ``where``) a count of ``tokens`` whose byte totals an int64
        cannot hold: the one guard every command that counts bytes calls before its work."""
        from traces.infra.limits import exact_int64

        links = longest_route_links(routes)
        d, c = self.route_bytes(model)
        exact_int64(
            self.bytes_bound(model, tokens, links),
            f"{where}: {tokens:,} tokens x {model.num_moe_layers} MoE layers x top-{model.top_k}"
            f" x {d + c:,} bytes per route x {links} links",
            fix or "count fewer tokens (split the trace) or a smaller hidden size or fewer"
            " bytes per element",
        )

    def check_cluster_byte_counts(self, model: ModelSpec, tokens: int, cluster: ClusterSpec,
                                  where: str, fix: str = "") -> None:
        """:meth:`check_byte_counts` before the routes exist: no route is longer than all of
        the cluster's links, so the routes are built (to count exactly) only when that loose
        bound does not fit."""
        from traces.infra.limits import INT64_MAX

        if self.bytes_bound(model, tokens, len(cluster.links) + 2) <= INT64_MAX:
            return
        from simulator.cluster.paths import build_route_table

        self.check_byte_counts(model, tokens, build_route_table(cluster), where, fix)


def longest_route_links(routes: RouteTable) -> int:
    """Links on the longest GPU-to-GPU path: the uplink, the longest middle route, the
    downlink."""
    return int(np.diff(routes.middle_offsets).max(initial=0)) + 2


def validate_layout(expert_gpus: np.ndarray, model: ModelSpec, num_gpus: int) -> None:
    """``expert_gpus[l, i, r]``: GPU of replica r of expert i at MoE layer l (-1 = none)."""
    want = (model.num_moe_layers, model.num_routed_experts)
    if expert_gpus.ndim != 3 or expert_gpus.shape[:2] != want:
        raise InputError(
            f"layout has shape {list(expert_gpus.shape)[:2]} (layers, experts) but the trace's"
            f" model {model.name!r} has {want[0]} MoE layers x {want[1]} experts"
        )
    if (expert_gpus[:, :, 0] < 0).any():
        l_, i = np.argwhere(expert_gpus[:, :, 0] < 0)[0]
        raise InputError(f"layout: expert {i} of MoE layer index {l_} has no GPU")
    if expert_gpus.max() >= num_gpus or expert_gpus.min() < -1:
        bad = int(expert_gpus[(expert_gpus >= num_gpus) | (expert_gpus < -1)][0])
        raise InputError(f"layout names GPU {bad}, but the cluster has GPUs 0..{num_gpus - 1}")


def resolve_hosts(
    experts: np.ndarray, origins: np.ndarray, expert_gpus: np.ndarray,
    distance: np.ndarray | GpuDistance,
) -> np.ndarray:
    """Host GPU of every route, [tokens, layers, k]: the nearest replica to the origin."""
    layers = np.arange(experts.shape[1])[None, :, None]
    cand = expert_gpus[layers, experts.astype(np.int64)]  # [T, L, k, R]
    if cand.shape[-1] == 1:
        return cand[..., 0].astype(np.int64)
    d = distance[origins[:, None, None, None], np.maximum(cand, 0)]
    d = np.where(cand < 0, np.inf, d)
    best = np.argmin(d, axis=-1)
    return np.take_along_axis(cand, best[..., None], axis=-1)[..., 0].astype(np.int64)


def resolve_hosts_layer(
    experts_layer: np.ndarray,
    origins: np.ndarray,
    gpus_layer: np.ndarray,
    distance: np.ndarray | GpuDistance,
) -> np.ndarray:
    """Host GPU of every route of one layer, [tokens, k] (``gpus_layer``: [experts, replicas])."""
    if gpus_layer.shape[1] == 1:
        return gpus_layer[:, 0][experts_layer]
    cand = gpus_layer[experts_layer.astype(np.intp)]  # [T, k, R]
    if cand.shape[-1] == 1:
        return cand[..., 0].astype(np.int64)
    d = distance[origins[:, None, None], np.maximum(cand, 0)]
    d = np.where(cand < 0, np.inf, d)
    best = np.argmin(d, axis=-1)
    return np.take_along_axis(cand, best[..., None], axis=-1)[..., 0].astype(np.int64)


def pair_counts(origins: np.ndarray, hosts_layer: np.ndarray, num_gpus: int) -> np.ndarray:
    """Routes per (origin, host) for one layer as the dense int64 [gpus, gpus] matrix (the
    reference :func:`pair_list` is checked against; the replays use the list)."""
    flat = (origins[:, None] * num_gpus + hosts_layer).ravel()
    return np.bincount(flat, minlength=num_gpus * num_gpus).reshape(num_gpus, num_gpus)


@dataclass(frozen=True)
class PairList:
    """Routes per (origin, host) GPU pair for one layer, only the pairs that have any, sorted
    by origin then host (the order of ``np.nonzero`` on the dense matrix)."""

    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray  # int64, > 0

    def remote(self) -> PairList:
        """The pairs whose host is not the origin (the ones that move bytes)."""
        keep = self.src != self.dst
        return PairList(self.src[keep], self.dst[keep], self.count[keep])


def pair_hops(routes: RouteTable, pairs: PairList) -> float:
    """Sum over the pairs of routes x weighted distance (one way)."""
    return float((pairs.count * routes.gpu_distance[pairs.src, pairs.dst]).sum())


# below this many routes per GPU pair slot, counting into the dense key space is faster
_DENSE_KEYS_PER_ROUTE = 8


def pair_list(origins: np.ndarray, hosts_layer: np.ndarray, num_gpus: int) -> PairList:
    """:func:`pair_counts` without the [gpus, gpus] matrix: memory grows with routes."""
    flat = (origins[:, None].astype(np.int64) * num_gpus + hosts_layer).ravel()
    if num_gpus * num_gpus <= _DENSE_KEYS_PER_ROUTE * flat.size:
        dense = np.bincount(flat, minlength=num_gpus * num_gpus)
        keys = np.flatnonzero(dense)
        counts = dense[keys]
    else:
        keys, counts = np.unique(flat, return_counts=True)
    return PairList(keys // num_gpus, keys % num_gpus, counts.astype(np.int64))


def _first_in_row(sorted_rows: np.ndarray) -> np.ndarray:
    """Mask of the first occurrence of each value in every (sorted) row."""
    first = np.ones(sorted_rows.shape, dtype=bool)
    first[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    return first


def remote_servers(
    origins: np.ndarray, hosts_layer: np.ndarray, gpu_server: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The de-duplication rule: each token's host servers, sorted per row [tokens, k], and the
    mask of the entries that are one network copy (first of each remote server in the row)."""
    so = gpu_server[origins]
    s_sorted = np.sort(gpu_server[hosts_layer], axis=1)
    return s_sorted, _first_in_row(s_sorted) & (s_sorted != so[:, None])


@dataclass(frozen=True)
class RemoteCopies:
    """One layer's network copies: de-duplicated (one per token and remote server) and not
    (one per route whose host is on another server than the token's origin)."""

    dedup: int
    routes: int


def remote_copies(
    origins: np.ndarray, hosts_layer: np.ndarray, gpu_server: np.ndarray
) -> RemoteCopies:
    """Network copies of one layer with and without server-level de-duplication.

    Each copy crosses the network once each way: ``dispatch + combine`` bytes enter it.
    """
    _, keep = remote_servers(origins, hosts_layer, gpu_server)
    routes = int((gpu_server[hosts_layer] != gpu_server[origins][:, None]).sum())
    return RemoteCopies(dedup=int(keep.sum()), routes=routes)


class CopyTally:
    """Network copies summed over layers and micro-batches, with and without de-duplication."""

    def __init__(self) -> None:
        self.dedup = self.routes = self.token_layers = 0
        self.dedup_bytes = self.route_bytes = 0

    def add(self, copies: RemoteCopies, tokens: int, copy_bytes: int) -> None:
        """One layer of ``tokens`` tokens; ``copy_bytes`` = dispatch + combine bytes of a copy."""
        self.dedup += copies.dedup
        self.routes += copies.routes
        self.token_layers += tokens
        self.dedup_bytes += copies.dedup * copy_bytes
        self.route_bytes += copies.routes * copy_bytes

    def merge(self, other: CopyTally) -> None:
        """Add another tally's counts (e.g. one micro-batch's)."""
        self.dedup += other.dedup
        self.routes += other.routes
        self.token_layers += other.token_layers
        self.dedup_bytes += other.dedup_bytes
        self.route_bytes += other.route_bytes

    def summary(self) -> dict[str, float]:
        n = self.token_layers or 1
        return {
            "remote_copies_per_token_layer": self.dedup / n,
            "remote_routes_per_token_layer": self.routes / n,
            "network_bytes_dedup": float(self.dedup_bytes),
            "network_bytes_no_dedup": float(self.route_bytes),
        }
