"""From routing decisions to GPU-to-GPU traffic (pure numpy; shared by engine and analytic).

A *route* is (token, MoE layer, expert).  Its *origin* is the token's GPU: the trace's
``origin_gpu`` where recorded, otherwise the default origin model ``dp`` of
:mod:`traces.origins` applied to the block (its tokens dealt round-robin over the GPUs); the
commands set every token's origin for the whole trace first (``--origins``).  Its *host* is
the GPU holding the expert; with replicas, the replica nearest to the origin (ties: lowest
replica index).  Shared experts sit on every GPU and cause no traffic.

A *copy* is one token's hidden state on one link.  Which copies a layer moves and through
which NICs is the *dispatch scheme* (``DISPATCH_SCHEMES`` of :mod:`simulator.traffic_config`,
:mod:`simulator.dispatch`);
combine is the mirror image (partial results are summed where the copies fanned out before
they travel back).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec

if TYPE_CHECKING:
    from simulator.cluster.paths import GpuDistance, RouteTable

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
    if gpus_layer.shape[1] == 1:  # take with intp indices: small-int ones are cast inside
        # take at a higher cost than one astype (and a strided layer is read once)
        return gpus_layer[:, 0].take(experts_layer.astype(np.intp))
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
    by origin then host (the order of ``np.nonzero`` on the dense matrix).  ``dense``: the
    same counts as the flat [gpus * gpus] matrix, where :func:`pair_list` counted into it (a
    small cluster against the routes), else ``None``."""

    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray  # int64, > 0
    dense: np.ndarray | None = None

    def remote(self) -> PairList:
        """The pairs whose host is not the origin (the ones that move bytes)."""
        keep = self.src != self.dst
        return PairList(self.src[keep], self.dst[keep], self.count[keep])


def pair_hops(routes: RouteTable, pairs: PairList) -> float:
    """Sum over the pairs of routes x weighted distance (one way)."""
    if pairs.dense is not None:  # the [gpus, gpus] counts exist: the same distances, cached
        d = routes.distance.ravel().take(pairs.src * routes.num_gpus + pairs.dst)
    else:
        d = routes.gpu_distance[pairs.src, pairs.dst]
    return float((pairs.count * d).sum())


# below this many routes per GPU pair slot, counting into the dense key space is faster
_DENSE_KEYS_PER_ROUTE = 8


def pair_list(origins: np.ndarray, hosts_layer: np.ndarray, num_gpus: int) -> PairList:
    """:func:`pair_counts` without the [gpus, gpus] matrix: memory grows with routes."""
    flat = (origins[:, None].astype(np.int64) * num_gpus + hosts_layer).ravel()
    if num_gpus * num_gpus <= _DENSE_KEYS_PER_ROUTE * flat.size:
        dense = np.bincount(flat, minlength=num_gpus * num_gpus)
        keys = np.flatnonzero(dense.astype(bool))  # (2-3x faster on bools than on counts)
        src = keys // num_gpus  # (the remainder as keys - src * gpus: int64 % costs a division)
        return PairList(src, keys - src * num_gpus,
                        dense.take(keys).astype(np.int64, copy=False), dense)
    keys, counts = np.unique(flat, return_counts=True)
    src = keys // num_gpus
    return PairList(src, keys - src * num_gpus, counts.astype(np.int64))


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
    origins: np.ndarray, hosts_layer: np.ndarray, gpu_server: np.ndarray,
    pairs: PairList | None = None,
) -> RemoteCopies:
    """Network copies of one layer with and without server-level de-duplication.

    Each copy crosses the network once each way: ``dispatch + combine`` bytes enter it.
    ``pairs``: the layer's :func:`pair_list`; with its dense counts the routes that change
    servers are counted per GPU pair, not per route.
    """
    if pairs is not None and pairs.dense is not None:
        same = same_server_keys(gpu_server)
        routes = int(hosts_layer.size - pairs.dense.take(same).sum())
    else:
        so = gpu_server[origins]
        routes = int((gpu_server[hosts_layer] != so[:, None]).sum())
    if hosts_layer.size and int(gpu_server.max()) < 64:  # servers as bits: no sort
        word = np.uint32 if int(gpu_server.max()) < 32 else np.uint64  # (half the bytes)
        bit = np.left_shift(word(1), gpu_server.astype(word))
        host_bits, own_bits = bit.take(hosts_layer), bit.take(origins)
        bits = host_bits[:, 0].copy()  # OR column by column: 3x faster than reduce(axis=1)
        for j in range(1, host_bits.shape[1]):
            bits |= host_bits[:, j]
        bits &= ~own_bits
        return RemoteCopies(dedup=int(np.bitwise_count(bits).sum()), routes=routes)
    _, keep = remote_servers(origins, hosts_layer, gpu_server)
    return RemoteCopies(dedup=int(keep.sum()), routes=routes)


def same_server_keys(gpu_server: np.ndarray) -> np.ndarray:
    """Sorted keys a * gpus + b of the GPU pairs (a, b) on one server (a == b included),
    read-only (kept per cluster: every layer asks for them twice)."""
    return _same_server_keys(np.asarray(gpu_server, dtype=np.int64).tobytes())


@functools.lru_cache(maxsize=16)
def _same_server_keys(gpu_server_bytes: bytes) -> np.ndarray:
    gpu_server = np.frombuffer(gpu_server_bytes, dtype=np.int64)
    g = int(gpu_server.shape[0])
    order = np.argsort(gpu_server, kind="stable")  # GPUs grouped by server
    sizes = np.bincount(gpu_server)
    first = np.zeros(sizes.size, dtype=np.int64)
    np.cumsum(sizes[:-1], out=first[1:])
    partners = sizes[gpu_server]  # per GPU a: the GPUs of its server
    a = np.repeat(np.arange(g), partners)
    at = np.arange(a.size) - np.repeat(np.cumsum(partners) - partners, partners)
    keys = np.sort(a * g + order[first[gpu_server[a]] + at])
    keys.setflags(write=False)
    return keys


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
