"""A layer's traffic from the dense [gpus, gpus] route counts (small clusters against their
routes) against the same layer from the sparse pair list: the same plan, routes per GPU,
own routes and hops, value for value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_leaf_spine
from simulator.cluster.multipath import endpoints_of
from simulator.cluster.paths import build_route_table
from simulator.dispatch import dispatch_plan
from simulator.layer_traffic import layer_traffic
from simulator.traffic import PairList, pair_hops, pair_list

_ROUTES = {
    "fat-tree-8x4": build_route_table(build_fat_tree(4, 8)),  # 4 GPUs per server
    "fat-tree-6x2": build_route_table(build_fat_tree(4, 6, LinkDefaults(gpus_per_server=2))),
    "leaf-spine": build_route_table(build_leaf_spine(6, 3, 2)),
}


def _sparse(pairs: PairList) -> PairList:
    return PairList(pairs.src, pairs.dst, pairs.count)


def _assert_same_plan(a, b) -> None:
    for field in ("copies", "up", "pair", "down"):
        got, want = getattr(a, field), getattr(b, field)
        assert got.dtype.kind == want.dtype.kind
        np.testing.assert_array_equal(got, want, err_msg=field)
    for got, want in zip(a.feeds, b.feeds, strict=True):
        np.testing.assert_array_equal(got, want)
    assert (a.num_endpoints, a.slice_copies) == (b.num_endpoints, b.slice_copies)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(_ROUTES)), st.integers(1, 300), st.integers(1, 6),
       st.integers(0, 2**31), st.sampled_from(["all-to-all", "deepep-ll"]))
def test_dense_pooled_plan_equals_the_pair_list_plan(cluster, tokens, k, seed, scheme):
    # hosts drawn from a few GPUs too (skew: empty rows, columns and server blocks), and
    # tokens whose host is their origin (copies that move nothing)
    routes = _ROUTES[cluster]
    g, gs = routes.num_gpus, routes.cluster.gpu_server
    rng = np.random.default_rng(seed)
    origins = rng.integers(0, g, tokens)
    hot = rng.integers(0, g, rng.integers(1, g + 1))
    hosts = rng.choice(hot, (tokens, k))
    stay = rng.random((tokens, k)) < 0.2
    hosts[stay] = np.broadcast_to(origins[:, None], (tokens, k))[stay]
    pairs = pair_list(origins, hosts, g)
    if pairs.dense is None:  # too many GPUs against the routes: the list is all there is
        return
    ep = endpoints_of(routes)
    _assert_same_plan(dispatch_plan(scheme, origins, hosts, gs, ep, pairs),
                      dispatch_plan(scheme, origins, hosts, gs, ep, _sparse(pairs)))
    assert pair_hops(routes, pairs) == pair_hops(routes, _sparse(pairs))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(_ROUTES)), st.integers(40, 200), st.integers(0, 2**31))
def test_dense_layer_traffic_equals_the_pair_list_one(cluster, tokens, seed):
    # layer_traffic with the dense counts against the same layer counted pair by pair
    routes = _ROUTES[cluster]
    g = routes.num_gpus
    rng = np.random.default_rng(seed)
    experts, origins = rng.integers(0, 16, (tokens, 4)), rng.integers(0, g, tokens)
    # one replica per expert
    gpus_layer = rng.integers(0, g, (16, 1))
    ep = endpoints_of(routes)
    dense = layer_traffic(experts, origins, gpus_layer, routes, "all-to-all", ep)
    hosts = gpus_layer[:, 0][experts]
    pairs = _sparse(pair_list(origins, hosts, g))
    own = pairs.src == pairs.dst
    np.testing.assert_array_equal(
        dense.routes_on, np.bincount(pairs.dst, weights=pairs.count, minlength=g))
    assert dense.routes_on.dtype == np.int64
    np.testing.assert_array_equal(dense.self_routes,
                                  np.bincount(pairs.src[own], minlength=g) > 0)
    assert dense.hops == 2 * pair_hops(routes, pairs)
    _assert_same_plan(dense.dispatch, dispatch_plan("all-to-all", origins, hosts,
                                                    routes.cluster.gpu_server, ep, pairs))
