"""Exact, order-independent byte counts under split multipath shares (share_units)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sparse_routes import counting_cases

from simulator.analytic import count_traffic
from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_leaf_spine
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import build_route_table
from simulator.cluster.share_units import share_units, whole_bytes
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.flow_engine import simulate_flow
from simulator.traffic_config import TrafficConfig


def test_whole_bytes_rounds_exact_halves_to_even():
    # units of 1/2 byte: 3 -> 1.5 -> 2, 5 -> 2.5 -> 2, 7 -> 3.5 -> 4, 4 -> 2, 1 -> 0.5 -> 0
    np.testing.assert_array_equal(whole_bytes(np.array([3, 5, 7, 4, 1]), 2), [2, 2, 4, 2, 0])
    # units of 1/3: 4 -> 1.33 -> 1, 5 -> 1.67 -> 2
    np.testing.assert_array_equal(whole_bytes(np.array([4, 5]), 3), [1, 2])
    # Python integers beyond int64 (object arrays) round the same way: (2**63 + 1) / 2
    big = np.array([2**63 + 1], dtype=object)
    assert whole_bytes(big, 2).tolist() == [2**62]
    # no exact denominator: plain float bytes rounded once
    np.testing.assert_array_equal(whole_bytes(np.array([1.4, 1.6]), None), [1, 2])


def test_share_units_refuses_a_share_off_the_grid():
    np.testing.assert_array_equal(share_units(np.array([0.25, 0.5, 1.0]), 4), [1, 2, 4])
    with pytest.raises(ValueError, match="1/4"):
        share_units(np.array([1 / 3]), 4)


@pytest.mark.parametrize(("cluster", "spray", "ecmp"), [
    # k=4 fat tree: an edge switch splits over 2 aggregation switches, each over 2 cores: 1/4;
    # ECMP: 4 flows per GPU pair x 8 x 8 GPU pairs per server pair = 256 flows
    (build_fat_tree(4, 8), 4, 256),
    (build_fat_tree(6, 12), 9, 256),  # 3 aggregation x 3 cores
    # two leaves, two spines: a leaf splits over 2 spines; 4 flows x 1 x 1 GPU
    (build_leaf_spine(2, 1, 2, defaults=LinkDefaults(gpus_per_server=1)), 2, 4),
])
def test_share_denominators_by_hand(cluster, spray, ecmp):
    routes = build_route_table(cluster)
    assert MultipathRoutes(routes, "spray").share_denominator == spray
    assert MultipathRoutes(routes, "ecmp", 4).share_denominator == ecmp
    assert MultipathRoutes(routes, "hash").share_denominator == 1


@pytest.mark.parametrize(("hidden", "want"), [(3, 2), (5, 2), (7, 4), (4, 2)])
def test_half_a_sprayed_byte_rounds_to_even_in_every_engine(hidden, want):
    # s0 - leaf0 = {spine0, spine1} = leaf1 - s1, one GPU each.  One token on g0 routed to
    # the expert on g1 sends ``hidden`` dispatch bytes (1 B per element), split 1/2 per spine:
    # hidden 3 -> 1.5 B -> 2; 5 -> 2.5 -> 2; 7 -> 3.5 -> 4; 4 -> 2 exactly.  The analytic
    # counter, the DES and flow mode all count the exact half and round it to even.
    cluster = build_leaf_spine(2, 1, 2, defaults=LinkDefaults(gpus_per_server=1))
    routes = build_route_table(cluster)
    trace = make_trace(tiny_model(hidden=hidden), np.array([[[1]]]), origin=np.zeros(1))
    layout = np.array([[0, 1]])
    traffic = TrafficConfig(1.0, 2.0)
    # directed ids 2i (a -> b) of links 0 and 1: leaf0 -> spine0, leaf0 -> spine1
    assert [(x.a, x.b) for x in cluster.links[:2]] == [("leaf0", "spine0"), ("leaf0", "spine1")]
    to_spine = [0, 2]
    an = count_traffic([trace], routes, layout, traffic)
    assert an.dispatch_link_bytes[to_spine].tolist() == [want, want]
    cfg = dict(traffic=traffic, chunk_bytes=1_000_000)
    des = simulate([trace], routes, layout, SimConfig(**cfg))
    flow = simulate_flow([trace], routes, layout, SimConfig(mode="flow", **cfg))
    for res in (des, flow):
        np.testing.assert_array_equal(res.links["bytes"].to_numpy(), an.link_bytes)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counting_cases(), st.integers(1, 20))
def test_bytes_do_not_depend_on_token_order_or_micro_batches(case, cut):
    # the same copies summed in another order (tokens reversed, or cut into micro-batches
    # of ``cut`` tokens) give the same exact sum, hence the same whole bytes
    cluster, trace, layout, traffic = case
    routes = build_route_table(cluster)
    want = count_traffic([trace], routes, layout, traffic)
    rev = trace.take(np.arange(trace.num_tokens)[::-1])
    for got in (count_traffic([rev], routes, layout, traffic),
                count_traffic([trace], routes, layout, traffic, microbatch_tokens=cut)):
        np.testing.assert_array_equal(got.dispatch_link_bytes, want.dispatch_link_bytes)
        np.testing.assert_array_equal(got.combine_link_bytes, want.combine_link_bytes)


@pytest.mark.parametrize("seed", range(4))
def test_sixth_shares_sum_the_same_in_any_grouping(seed):
    # six spines: every leaf splits 1/6 per spine, not a binary fraction, so float sums of
    # the shares depended on their grouping (seed 1 differed by a byte between one block and
    # micro-batches before the counts were kept in whole units)
    cluster = build_leaf_spine(6, 1, 6, defaults=LinkDefaults(gpus_per_server=1))
    routes = build_route_table(cluster)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    ids = rng.integers(0, 6, (n, 1, 1))
    trace = make_trace(tiny_model(1, 6, 1, hidden=int(rng.integers(1, 10))), ids,
                       origin=rng.integers(0, cluster.num_gpus, n))
    layout = rng.integers(0, cluster.num_gpus, (1, 6))
    traffic = TrafficConfig(1.0, 2.0)
    want = count_traffic([trace], routes, layout, traffic).link_bytes
    for cut in (1, 2, 3, 4):
        got = count_traffic([trace], routes, layout, traffic, microbatch_tokens=cut)
        np.testing.assert_array_equal(got.link_bytes, want)
