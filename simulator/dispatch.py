"""Dispatch schemes: which copies one layer's dispatch moves, and through which endpoints.

A copy leaves its GPU on the GPU's link to its server node (NVLink), crosses the network
between two endpoints (:mod:`simulator.cluster.multipath`) when it changes servers, and
reaches its GPU on the server node's link to it.  With per-GPU NICs, ``nic(a)`` is GPU a's own
NIC and ``nic(T, i)`` the NIC of the GPU with local index i on server T; with pooled NICs
both are the server endpoint.  For a route from GPU a (server S) to host GPU b (server T):

* ``all-to-all`` (NCCL-like): one copy per route.  Across servers it leaves through
  ``nic(S, local(b))``, the NIC on b's rail, after an NVLink hop to that GPU (PXN), and enters
  through ``nic(b)``: rail traffic stays on its rail.
* ``deepep-ll`` (DeepEP low-latency kernels): one copy per route, sent by RDMA from ``nic(a)``
  straight to ``nic(b)`` (crossing rails through the spines); no forwarding.
* ``deepep-normal`` (DeepEP normal kernels): one RDMA copy per token and remote server T that
  hosts any of its experts, from ``nic(a)`` to ``nic(T, local(a))``, then one NVLink copy per
  token and host GPU on T (fan-out); inside S one copy per token and host GPU.  With pooled
  NICs the RDMA copy goes server endpoint to server endpoint (server-level de-duplication).
  :func:`dedup_keys` applies the de-duplication rule, :func:`simulator.traffic.remote_servers`
  (also what ``dedup`` placement optimises).

Combine is the mirror image of dispatch (:meth:`PhasePlan.mirror`).  A scheme's kernel may
also work locally on each receiving GPU (a fixed time, copies through the GPU's memory):
:mod:`simulator.receive_work`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.cluster.multipath import Endpoints
from simulator.timing import DEEPEP_SLICE_COPIES
from simulator.traffic import PairList, pair_list, remote_servers, same_server_keys
from simulator.traffic_config import DISPATCH_SCHEMES
from simulator.unique import distinct_keys, rank_lookup, sorted_unique
from traces.infra.errors import InputError

Pairs = tuple[np.ndarray, np.ndarray]
DEEPEP_SLICE = int(DEEPEP_SLICE_COPIES.value)
def check_scheme(scheme: str, endpoints: Endpoints, cluster_name: str) -> None:
    """Every scheme runs on every cluster: with pooled NICs ``nic(T, i)`` is server T's
    endpoint, so ``deepep-normal`` sends one copy per token and remote server through it
    (server-level de-duplication)."""
    if scheme not in DISPATCH_SCHEMES:
        raise InputError(f"cluster {cluster_name!r}: unknown dispatch scheme {scheme!r}")


def scheme_note(scheme: str, has_gpu_nics: bool, cluster_label: str) -> str | None:
    """The one line a command prints when a scheme runs differently on this cluster than on
    the hardware it was written for (else None): ``deepep-normal`` on pooled NICs."""
    if scheme != "deepep-normal" or has_gpu_nics:
        return None
    return (
        f"note: {cluster_label} has no NIC per GPU, so deepep-normal sends each token's RDMA"
        " copy from its server's pooled NICs to the remote server's (as NVSHMEM maps several"
        " GPUs to one NIC), not from the GPU's own NIC to the NIC of the same local index;"
        " a cluster with per-GPU NICs (e.g. --preset deepseek-prefill-ep32) replays the rails"
    )


@dataclass(frozen=True, eq=False)
class DedupKeys:
    """The de-duplication rule: a token reaches each host GPU once (however many of its
    experts sit there) and each remote server once (however many host GPUs it has there).

    ``gpu``: distinct (token, host GPU) with host != origin; ``server``: distinct (token,
    server) with the server != the origin's server.
    """

    gpu: Pairs
    server: Pairs


def dedup_keys(origins: np.ndarray, hosts: np.ndarray, gpu_server: np.ndarray) -> DedupKeys:
    g = int(gpu_server.shape[0])
    t = np.repeat(np.arange(hosts.shape[0], dtype=np.int64), hosts.shape[1])
    h = hosts.ravel().astype(np.int64)
    away = h != origins[t]
    key = sorted_unique(t[away] * g + h[away])
    tt, hh = key // g, key % g
    s_sorted, first_remote = remote_servers(origins, hosts, gpu_server)
    st, col = np.nonzero(first_remote)  # row-major: by token, then server
    return DedupKeys(gpu=(tt, hh), server=(st, s_sorted[st, col]))


@dataclass(frozen=True, eq=False)
class PhasePlan:
    """The messages of one layer's dispatch, and which message feeds which.

    Message m carries ``copies[m]`` copies along: GPU ``up[m]``'s link to its server node (if
    >= 0), the network route of endpoint pair ``pair[m]`` = e*E+f (if >= 0), the server
    node's link to GPU ``down[m]`` (if >= 0).  ``feeds`` (i, j): message j starts once every
    message feeding it has arrived.  A message that starts on a GPU's link and has no feeds
    is where that GPU's data enters; one that ends on a GPU's link and feeds nothing delivers
    to that GPU.  ``slice_copies`` > 0: a message travels as slices of at most that many
    copies, issued round-robin with the other messages starting at the same moment (how
    DeepEP's kernels interleave their destinations, :data:`simulator.timing.DEEPEP_SLICE_COPIES`);
    0: as one train.
    """

    copies: np.ndarray  # [messages]
    up: np.ndarray
    pair: np.ndarray
    down: np.ndarray
    feeds: Pairs
    num_endpoints: int
    slice_copies: int = 0

    def mirror(self) -> PhasePlan:
        """The combine phase: the same copies travelling the reverse way."""
        n = self.num_endpoints
        pair = np.where(self.pair >= 0, (self.pair % n) * n + self.pair // n, -1)
        return PhasePlan(
            self.copies, self.down, pair, self.up, (self.feeds[1], self.feeds[0]), n,
            self.slice_copies,
        )

    def delivered_to(self, num_gpus: int) -> np.ndarray:
        """Messages delivering to each GPU, [gpus]."""
        final = np.ones(self.copies.shape[0], dtype=bool)
        final[self.feeds[0]] = False
        final &= self.down >= 0
        return np.bincount(self.down[final], minlength=num_gpus)


def route_pairs(
    scheme: str, a: np.ndarray, b: np.ndarray, gpu_server: np.ndarray, ep: Endpoints
) -> np.ndarray:
    """Endpoint pair e*E+f of the network copy of routes a -> b on different servers
    (``all-to-all``: PXN through the NIC on b's rail; ``deepep-ll``: a's own NIC)."""
    if scheme == "deepep-ll":
        src = ep.gpu_endpoint[a]
    else:
        src = ep.of_local(gpu_server[a], ep.local_index[b])
    return src * ep.count + ep.gpu_endpoint[b]


def server_pairs(a: np.ndarray, servers: np.ndarray, ep: Endpoints) -> np.ndarray:
    """Endpoint pair of ``deepep-normal``'s RDMA copy from GPU a to a remote server: a's own
    NIC to the NIC of the GPU of a's local index there."""
    return ep.gpu_endpoint[a] * ep.count + ep.of_local(servers, ep.local_index[a])


def dispatch_plan(
    scheme: str, origins: np.ndarray, hosts: np.ndarray, gpu_server: np.ndarray,
    endpoints: Endpoints, pairs: PairList | None = None,
) -> PhasePlan:
    """Messages of one layer's dispatch under ``scheme`` (module docstring).

    With per-GPU NICs a message runs end to end: GPU to GPU (``deepep-ll``, ``all-to-all``),
    or GPU to the forwarding GPU's server and then one NVLink message per receiving GPU
    (``deepep-normal``).  With pooled NICs the copies travel in three aggregated stages: one
    message per source GPU to its server node, one per endpoint pair, one per receiving GPU.
    ``pairs``: the layer's routes per (origin, host) pair when the caller has them.
    """
    if scheme == "deepep-normal":
        if not endpoints.per_gpu:
            return _pooled_deepep_normal_plan(origins, hosts, gpu_server, endpoints)
        return _deepep_normal_plan(origins, hosts, gpu_server, endpoints)
    if scheme not in ("all-to-all", "deepep-ll"):
        raise ValueError(f"unknown dispatch scheme {scheme!r}")
    g, ep = int(gpu_server.shape[0]), endpoints
    all_pairs = pair_list(origins, hosts, g) if pairs is None else pairs
    if not ep.per_gpu and all_pairs.dense is not None:
        return _pooled_plan_dense(all_pairs.dense.reshape(g, g), gpu_server, ep)
    p_list = all_pairs.remote()
    a, b, c = p_list.src, p_list.dst, p_list.count
    remote = gpu_server[a] != gpu_server[b]
    p = np.full(a.size, -1, dtype=np.int64)
    p[remote] = route_pairs(scheme, a[remote], b[remote], gpu_server, ep)
    if ep.per_gpu:  # GPU-pair messages; deepep-ll's interleave (sliced)
        none = np.zeros(0, dtype=np.int64)
        return PhasePlan(c, a, p, b, (none, none), ep.count,
                         DEEPEP_SLICE if scheme == "deepep-ll" else 0)
    return _pooled_plan(a, b, c, p, remote, g, ep)


def _deepep_copies(origins: np.ndarray, hosts: np.ndarray, gpu_server: np.ndarray
                   ) -> tuple[np.ndarray, ...]:
    """``deepep-normal``'s copies (:func:`dedup_keys`): per (token, host GPU) copy its host
    GPU, the token's origin GPU and whether the host shares the origin's server; per (token,
    remote server) copy its origin GPU and server."""
    keys = dedup_keys(origins, hosts, gpu_server)
    tt, hh = keys.gpu
    oo = origins[tt]
    st, ss = keys.server
    return hh, oo, gpu_server[hh] == gpu_server[oo], origins[st], ss


def _deepep_normal_plan(origins: np.ndarray, hosts: np.ndarray, gpu_server: np.ndarray,
                        ep: Endpoints) -> PhasePlan:
    """``deepep-normal`` on per-GPU NICs: one RDMA message per (origin GPU, endpoint pair),
    local copies GPU to GPU, and the forwarding GPU's NVLink fan-out per (RDMA message,
    receiving GPU) (pooled NICs: :func:`_pooled_deepep_normal_plan`)."""
    g = int(gpu_server.shape[0])
    n_ep = ep.count
    hh, oo, local, so, ss = _deepep_copies(origins, hosts, gpu_server)
    # RDMA messages per (origin GPU, endpoint pair): the pair has one source GPU
    n2 = n_ep * n_ep
    rdma_k, rdma_c = np.unique(so * n2 + server_pairs(so, ss, ep), return_counts=True)
    rdma_up, rdma_p = rdma_k // n2, rdma_k % n2
    # local copies GPU to GPU
    lk, lc = np.unique(oo[local] * g + hh[local], return_counts=True)
    # fan-out per (RDMA message, receiving GPU)
    o_far = oo[~local]
    p_fan = o_far * n2 + server_pairs(o_far, gpu_server[hh[~local]], ep)
    fk, fc = np.unique(p_fan * g + hh[~local], return_counts=True)
    # in server-rotation order (receivers on the next server first): the combine sends
    # these in this order, so a server's GPUs complete one RDMA message at a time and
    # the servers do not all send to the same server at once
    ns = int(gpu_server.max()) + 1
    rot = np.argsort(
        (gpu_server[fk // g // n2] - gpu_server[fk % g]) % ns, kind="stable",
    )
    fk, fc = fk[rot], fc[rot]
    src = np.searchsorted(rdma_k, fk // g)
    n_r, n_l = rdma_p.size, lk.size
    m1 = np.full(n_r, -1)
    m2 = np.full(fk.size, -1)
    return PhasePlan(
        np.concatenate([rdma_c, lc, fc]),
        np.concatenate([rdma_up, lk // g, m2]),
        np.concatenate([rdma_p, np.full(n_l, -1), m2]),
        np.concatenate([m1, lk % g, fk % g]),
        (src, n_r + n_l + np.arange(fk.size)),
        n_ep,
        DEEPEP_SLICE,
    )


def _pooled_plan(a: np.ndarray, b: np.ndarray, c: np.ndarray, p: np.ndarray,
                 remote: np.ndarray, g: int, ep: Endpoints) -> PhasePlan:
    """Pooled NICs: an uplink message per source GPU, one per endpoint pair (``p``: the
    remote routes' pair), a downlink message per receiving GPU (routes a -> b, c each)."""
    return staged_plan(
        np.bincount(a, weights=c, minlength=g).astype(np.int64), p[remote], c[remote],
        np.bincount(b, weights=c, minlength=g).astype(np.int64),
        (a[remote], p[remote]), (a[~remote], b[~remote]), (p[remote], b[remote]), ep,
    )


def _group_sums(x: np.ndarray, group: np.ndarray, n: int, axis: int) -> np.ndarray:
    """The sums of ``x`` along ``axis`` in each group 0..n-1 (``group``: per index of that
    axis), as an array with n entries on that axis: one ``reduceat`` over the indices sorted
    by group (exact for integer counts in float64: every partial sum is a whole number)."""
    sizes = np.bincount(group, minlength=n)
    if not sizes.all():  # an empty group: reduceat would repeat its neighbour's entry
        rows = x.shape[1 - axis]
        key = (np.arange(rows)[:, None] * n + group[None, :]).ravel()
        xt = x if axis == 1 else x.T
        out = np.bincount(key, weights=xt.ravel(), minlength=rows * n).reshape(rows, n)
        return out if axis == 1 else out.T
    order = np.argsort(group, kind="stable")
    if np.array_equal(order, np.arange(order.size)):
        if axis == 0 and (sizes == sizes[0]).all():  # consecutive equal groups: 4x faster
            return x.reshape(n, int(sizes[0]), x.shape[1]).sum(axis=1)
    else:
        x = x.take(order, axis=axis)
    starts = np.zeros(n, dtype=np.intp)
    np.cumsum(sizes[:-1], out=starts[1:])
    return np.add.reduceat(x, starts, axis=axis)


def _pooled_plan_dense(counts: np.ndarray, gpu_server: np.ndarray, ep: Endpoints) -> PhasePlan:
    """:func:`_pooled_plan` (the same plan) from the [gpus, gpus] route counts of a cluster
    small against its routes: every stage aggregated per (GPU, server), (server, GPU) and
    (server, server) at a cost of gpus x gpus, not routes (pooled NICs: server s is endpoint
    s).  Exact: float64 sums of integer counts."""
    n, e = ep.count, ep.gpu_endpoint
    g = int(gpu_server.shape[0])
    r = counts.astype(np.float64)
    np.fill_diagonal(r, 0.0)  # copies that stay on their GPU move nothing
    to_server = _group_sums(r, e, n, axis=1)  # [gpus, endpoints]: GPU a to those behind f
    from_server = _group_sums(r, e, n, axis=0)  # [endpoints, gpus]
    between = _group_sums(from_server, e, n, axis=1)  # [endpoints, endpoints]
    a, f = np.nonzero(to_server)
    up = f != e[a]
    s, b = np.nonzero(from_server)
    down = s != e[b]
    se, fe = np.nonzero(between)
    mid = se != fe
    same = same_server_keys(gpu_server)
    la, lb = np.divmod(same[r.ravel().take(same) > 0], g)  # row-major, as np.nonzero
    return staged_plan(  # (each GPU's copies summed from the per-server sums: exact, smaller)
        to_server.sum(axis=1).astype(np.int64), se[mid] * n + fe[mid],
        between[se[mid], fe[mid]], from_server.sum(axis=0).astype(np.int64),
        (a[up], e[a[up]] * n + f[up]), (la, lb), (s[down] * n + e[b[down]], b[down]), ep,
    )


def _pooled_deepep_normal_plan(origins: np.ndarray, hosts: np.ndarray, gpu_server: np.ndarray,
                               ep: Endpoints) -> PhasePlan:
    """``deepep-normal`` on pooled NICs, in the three aggregated stages of every pooled
    plan: each origin GPU's uplink carries one copy per token and remote server (plus its
    copies to GPUs of its own server), each server pair's route the de-duplicated copies
    between them, each GPU's downlink one copy per token it hosts experts of (the fan-out, and
    the local copies).  The bytes on every link are those of the message-per-(origin GPU,
    server) plan; a stage starts when the one feeding it has arrived, as in ``all-to-all``."""
    g = int(gpu_server.shape[0])
    hh, oo, local, so, ss = _deepep_copies(origins, hosts, gpu_server)
    net = server_pairs(so, ss, ep)
    far = ~local
    fan = server_pairs(oo[far], gpu_server[hh[far]], ep)
    up_c = (np.bincount(so, minlength=g) + np.bincount(oo[local], minlength=g)).astype(np.int64)
    down_c = np.bincount(hh, minlength=g).astype(np.int64)
    return staged_plan(up_c, net, np.ones(net.size, dtype=np.int64), down_c, (so, net),
                       (oo[local], hh[local]), (fan, hh[far]), ep)


def _distinct_feeds(src: np.ndarray, dst: np.ndarray, src0: int, n_src: int, dst0: int,
                    n_dst: int, n_all: int) -> np.ndarray:
    """Distinct keys src * n_all + dst of one stage's feeds (sources src0.., destinations
    dst0..), made distinct in the stage's own key space (small enough to count in)."""
    local = distinct_keys((src - src0) * n_dst + (dst - dst0), n_src * n_dst)
    row = local // max(n_dst, 1)
    return (row + src0) * n_all + (local - row * n_dst) + dst0


def staged_plan(up_c: np.ndarray, mid_p: np.ndarray, mid_w: np.ndarray, down_c: np.ndarray,
                up_mid: Pairs, up_down: Pairs, mid_down: Pairs, ep: Endpoints) -> PhasePlan:
    """A pooled plan from its stages: ``up_c``/``down_c`` copies on each GPU's uplink/downlink,
    copies ``mid_w`` on endpoint pair ``mid_p`` (summed per pair), and which message feeds
    which: (GPU, pair) uplink -> pair, (GPU, GPU) uplink -> downlink, (pair, GPU) pair ->
    downlink (repeats allowed).  Pairs are in rotation order from each source endpoint (to
    e+1, e+2, ...): a source server starts them together once its GPUs' data is in, and in
    pair order every server would send to server 0 first."""
    g = int(up_c.shape[0])
    n_pairs = ep.count * ep.count
    by_pair = distinct_keys(mid_p, n_pairs)
    e, f = np.divmod(by_pair, ep.count)
    rot = np.lexsort(((f - e) % ep.count, e))
    rank = np.empty_like(rot)
    rank[rot] = np.arange(rot.size)
    mid_of = rank_lookup(by_pair, rank, n_pairs, 3 * mid_p.size)
    mids = by_pair[rot]
    mid_c = np.bincount(mid_of(mid_p), weights=mid_w, minlength=mids.size).astype(np.int64)
    ups, downs = np.flatnonzero(up_c), np.flatnonzero(down_c)
    n_u, n_m = ups.size, mids.size
    n_all = n_u + n_m + downs.size
    up_id = np.full(g, -1)
    up_id[ups] = np.arange(n_u)
    down_id = np.full(g, -1)
    down_id[downs] = n_u + n_m + np.arange(downs.size)
    n_d = downs.size
    stages = [  # (source ids, destination ids, first source id, sources, first destination id,
                # destinations) of the feeds uplink -> pair, uplink -> downlink, pair -> downlink
        (up_id[up_mid[0]], n_u + mid_of(up_mid[1]), 0, n_u, n_u, n_m),
        (up_id[up_down[0]], down_id[up_down[1]], 0, n_u, n_u + n_m, n_d),
        (n_u + mid_of(mid_down[0]), down_id[mid_down[1]], n_u, n_m, n_u + n_m, n_d),
    ]
    # each stage's keys sorted and distinct, and no key in two stages (their sources or
    # destinations differ in kind): merging the sorted runs is a stable (run-merging) sort
    key = np.sort(np.concatenate([_distinct_feeds(*stage, n_all) for stage in stages]),
                  kind="stable")
    m_u, m_m, m_d = np.full(n_u, -1), np.full(n_m, -1), np.full(downs.size, -1)
    return PhasePlan(
        np.concatenate([up_c[ups], mid_c, down_c[downs]]),
        np.concatenate([ups, m_m, m_d]),
        np.concatenate([m_u, mids, m_d]),
        np.concatenate([m_u, m_m, downs]),
        (key // n_all, key % n_all),
        ep.count,
    )
