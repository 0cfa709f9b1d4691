"""One layout's traffic counted once, then mapped onto many route tables (failure what-ifs).

A layer's copies (:class:`simulator.analytic.LayerDemand`: per GPU on its link to its server
node and back, per endpoint pair across the network) depend on the tokens, the layout and the
GPU distances (which copy of a replicated expert serves a route), never on the links.  Links
enter only when those copies are put on a route table, and that is linear: the copies of
endpoint pair p put ``M[:, p]`` copies on each directed link, where column p is the route
table's own :meth:`~simulator.cluster.multipath.MultipathRoutes.link_copies` of one copy on
p.  So :func:`count_demand` walks the trace once per layout and distance matrix, and
:func:`map_demand` gives, on any route table of the same GPUs, servers and endpoints (a
link or switch failure that cuts no GPU off), the parts :func:`simulator.analytic.count_microbatch`
gives there, for :func:`simulator.analytic.combine_parts`; per failure only the matrix products
are new, and each route table's columns are computed once for every layout.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from simulator.analytic import (
    AnalyticPart,
    AnalyticResult,
    as_replicas,
    combine_parts,
    layer_counter,
)
from simulator.cluster.paths import RouteTable
from simulator.traffic import (
    CopyTally,
    TrafficConfig,
    remote_copies,
    resolve_hosts_layer,
    resolve_origins,
    validate_layout,
)
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class TraceDemand:
    """A trace's copies under one layout, per micro-batch and MoE layer, before any link."""

    num_gpus: int
    pairs: np.ndarray  # distinct endpoint pairs used by either phase, sorted
    up: np.ndarray  # [micro-batches, layers, gpus] dispatch copies up to the server node
    down: np.ndarray  # [micro-batches, layers, gpus]
    dispatch_pairs: np.ndarray  # [micro-batches, layers, len(pairs)] network copies
    combine_pairs: np.ndarray  # the same copies the reverse way
    routes_od: list[tuple[np.ndarray, np.ndarray]]  # per micro-batch: origin*G+host, routes
    tokens: list[int]
    tallies: list[CopyTally]
    gpu_routes: list[np.ndarray]  # per micro-batch [layers, gpus]
    layers: tuple[int, ...]  # the MoE layers' indices in the model
    bytes_per_copy: tuple[int, int]  # (dispatch, combine)


def count_demand(
    blocks: Iterable[RoutingTrace], routes: RouteTable, expert_gpus: np.ndarray,
    config: TrafficConfig,
) -> TraceDemand:
    """Walk the trace once: each block is one micro-batch (as :func:`count_traffic` takes it);
    ``routes`` gives the GPU distances that pick the serving copies and the endpoints."""
    counter = layer_counter(routes, config)
    layout = as_replicas(expert_gpus)
    g = routes.num_gpus
    gs = routes.cluster.gpu_server
    ups, downs, pair_lists, od, tokens, tallies, loads = [], [], [], [], [], [], []
    db = cb = 0
    layers: tuple[int, ...] = ()
    for block in blocks:
        m = block.model
        validate_layout(layout, m, g)
        db, cb = config.route_bytes(m)
        layers = tuple(m.moe_layer_indices)
        origins = resolve_origins(block, g)
        tally = CopyTally()
        up, down, mb_pairs, keys = [], [], [], []
        gpu_routes = np.zeros((m.num_moe_layers, g), dtype=np.int64)
        for li in range(m.num_moe_layers):
            hosts = resolve_hosts_layer(block.experts[:, li, :], origins, layout[li],
                                        routes.gpu_distance)
            gpu_routes[li] = np.bincount(hosts.ravel(), minlength=g)
            keys.append((origins[:, None] * g + hosts).ravel())
            tally.add(remote_copies(origins, hosts, gs), block.num_tokens, db + cb)
            d = counter.demand(origins, hosts)
            up.append(d.up)
            down.append(d.down)
            mb_pairs.append(d.pairs)
        key, n = np.unique(np.concatenate(keys), return_counts=True)
        ups.append(up)
        downs.append(down)
        pair_lists.append(mb_pairs)
        od.append((key, n.astype(np.float64)))
        tokens.append(block.num_tokens)
        tallies.append(tally)
        loads.append(gpu_routes)
    flat = [p for mb in pair_lists for p in mb]
    used = np.unique(np.concatenate(flat)) if flat else np.zeros(0, dtype=np.int64)
    pairs = np.union1d(used, counter.back(used))
    num_layers = len(layers)
    disp = np.zeros((len(tokens), num_layers, pairs.size))
    comb = np.zeros_like(disp)
    for mb, mb_pairs in enumerate(pair_lists):
        for li, p in enumerate(mb_pairs):
            disp[mb, li] = np.bincount(np.searchsorted(pairs, p), minlength=pairs.size)
            comb[mb, li] = np.bincount(np.searchsorted(pairs, counter.back(p)),
                                       minlength=pairs.size)
    return TraceDemand(g, pairs, np.array(ups).reshape(len(tokens), num_layers, g),
                       np.array(downs).reshape(len(tokens), num_layers, g), disp, comb, od,
                       tokens, tallies, loads, layers, (db, cb))


Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # (pair position, directed link, copies)
_COLUMNS: weakref.WeakKeyDictionary[RouteTable, dict[tuple[TrafficConfig, bytes], Columns]] = (
    weakref.WeakKeyDictionary())


def _pair_columns(routes: RouteTable, config: TrafficConfig, pairs: np.ndarray) -> Columns:
    """The copies one copy on each endpoint pair puts on every link of this route table, as
    sparse (pair position, directed link, copies) entries (cached per table)."""
    by_key = _COLUMNS.setdefault(routes, {})
    key = (config, pairs.tobytes())
    got = by_key.get(key)
    if got is None:
        mp = layer_counter(routes, config).multipath
        cols, links, copies = [], [], []
        for j, p in enumerate(pairs):
            per_link = mp.link_copies(np.array([p]), np.ones(1))
            nz = np.flatnonzero(per_link)
            cols.append(np.full(nz.size, j))
            links.append(nz)
            copies.append(per_link[nz])
        none = np.zeros(0, dtype=np.int64)
        got = ((np.concatenate(cols), np.concatenate(links), np.concatenate(copies)) if cols
               else (none, none, np.zeros(0)))
        by_key[key] = got
    return got


def _spread(rows: np.ndarray, at: tuple[np.ndarray, np.ndarray], w: np.ndarray,
            n_links: int) -> np.ndarray:
    """[rows, links]: ``rows[:, ids[i]] * w[i]`` summed onto link ``links[i]`` (``at``: links,
    ids).  No BLAS: the matrices are small and sparse, and BLAS threads fight over a loaded
    machine's cores."""
    out = np.zeros((n_links, rows.shape[0]))
    links, ids = at
    np.add.at(out, links, (rows[:, ids] * w).T)
    return out.T


def map_demand(demand: TraceDemand, routes: RouteTable, config: TrafficConfig) -> AnalyticResult:
    """The analytic result of the demand's trace and layout on ``routes`` (same GPUs, servers
    and endpoints as the table it was counted on)."""
    counter = layer_counter(routes, config)
    if routes.num_gpus != demand.num_gpus:
        raise ValueError(f"demand of {demand.num_gpus} GPUs mapped onto {routes.num_gpus}")
    n_links = counter.nlinks
    n_mb, num_layers, g = demand.up.shape
    bandwidth = np.repeat([lk.bandwidth_bytes_per_s for lk in routes.cluster.links], 2)
    gpus, ones = np.arange(g), np.ones(g)
    up_of, down_of = (routes.gpu_uplink, gpus), (routes.gpu_downlink, gpus)
    up, down = demand.up.reshape(-1, g), demand.down.reshape(-1, g)
    d_pairs = demand.dispatch_pairs.reshape(-1, demand.pairs.size)
    c_pairs = demand.combine_pairs.reshape(-1, demand.pairs.size)
    j, link, share = _pair_columns(routes, config, demand.pairs)
    mid_d = _spread(d_pairs, (link, j), share, n_links)
    mid_c = _spread(c_pairs, (link, j), share, n_links)
    d_copies = (_spread(up, up_of, ones, n_links) + mid_d
                + _spread(down, down_of, ones, n_links)).reshape(n_mb, num_layers, n_links)
    c_copies = (_spread(down, up_of, ones, n_links) + mid_c
                + _spread(up, down_of, ones, n_links)).reshape(n_mb, num_layers, n_links)
    db, cb = demand.bytes_per_copy
    parts = []
    for mb in range(n_mb):
        key, n = demand.routes_od[mb]
        hops = 2.0 * float((n * routes.gpu_distance[key // g, key % g]).sum())
        bounds: list[tuple[int, int, str, float]] = []
        for li, layer in enumerate(demand.layers):
            bounds.append((mb, layer, "dispatch",
                           float((d_copies[mb, li] * db / bandwidth).max())))
            bounds.append((mb, layer, "combine",
                           float((c_copies[mb, li] * cb / bandwidth).max())))
        parts.append(AnalyticPart(mb, d_copies[mb].sum(axis=0) * db,
                                  c_copies[mb].sum(axis=0) * cb, hops, demand.tokens[mb],
                                  demand.tallies[mb], bounds, demand.gpu_routes[mb]))
    return combine_parts(parts, routes, config)
