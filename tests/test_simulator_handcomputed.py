"""Hand-computed reference cases for the SimPy replay (bytes and times worked out below)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model, two_server_cluster

from simulator.analytic import count_traffic
from simulator.engine import SimConfig, simulate
from simulator.paths import build_route_table
from simulator.traffic import TrafficConfig

# Setup shared by the cases: hidden 10, FP8-like dispatch (1 B/element -> 10 B per route),
# BF16-like combine (2 B/element -> 20 B per route).  Expert 0 on GPU 0, expert 1 on GPU 1.
# Three tokens, all on GPU 0: tokens 0 and 1 pick expert 1 (remote), token 2 picks expert 0.
# NVLink 100 B/s, 0.01 s; network 10 B/s, 0.1 s; expert compute 0.5 s per route.
LAYOUT = np.array([[0, 1]])


def _run(chunk_bytes: int):
    cluster = two_server_cluster()
    routes = build_route_table(cluster)
    trace = make_trace(tiny_model(), np.array([[[1]], [[1]], [[0]]]), origin=np.zeros(3))
    cfg = SimConfig(
        traffic=TrafficConfig(1.0, 2.0),
        chunk_bytes=chunk_bytes,
        expert_time_per_route_s=0.5,
    )
    return routes, trace, simulate([trace], routes, LAYOUT, cfg)


def test_two_servers_bytes_and_latency_unchunked():
    routes, trace, res = _run(chunk_bytes=1_000_000)
    # Dispatch: 2 remote routes x 10 B = 20 B from g0 to g1.
    #   g0->s0: 20/100 = 0.2 s + 0.01 -> arrives 0.21
    #   s0->sw: 0.21 + 20/10 + 0.1 = 2.31;  sw->s1: 2.31 + 2.0 + 0.1 = 4.41
    #   s1->g1: 4.41 + 0.2 + 0.01 = 4.62  (dispatch complete on GPU 1)
    # Compute: GPU 1 has 2 routes x 0.5 = 1.0 s -> 5.62; GPU 0 its local route 0 -> 0.5.
    # Combine: 2 x 20 B = 40 B back: g1->s1 5.62 + 0.4 + 0.01 = 6.03; s1->sw 6.03 + 4 + 0.1
    #   = 10.13; sw->s0 14.23; s0->g0 14.23 + 0.4 + 0.01 = 14.64.
    layer = res.layers.iloc[0]
    assert layer["dispatch_done_s"] == pytest.approx(4.62)
    assert layer["compute_done_s"] == pytest.approx(5.62)
    assert layer["finish_s"] == pytest.approx(14.64)
    # All three tokens live on GPU 0, whose layer ends when the combine data arrived.
    np.testing.assert_allclose(res.tokens["moe_latency_s"], [14.64] * 3)
    links = res.links.set_index(["src", "dst"])["bytes"]
    assert links[("g0", "s0")] == 20 and links[("s0", "sw")] == 20
    assert links[("sw", "s1")] == 20 and links[("s1", "g1")] == 20
    assert links[("g1", "s1")] == 40 and links[("s1", "sw")] == 40
    assert links[("sw", "s0")] == 40 and links[("s0", "g0")] == 40
    # Paper's metric: distance(g0, g1) = 0 + 1 + 1 + 0 = 2; tokens 0 and 1 travel 2 + 2,
    # token 2 stays home: (4 + 4 + 0) / 3 hops per token.
    assert res.summary["hops_per_token"] == pytest.approx(8 / 3)
    # Busy time of s0->sw: 20 B / 10 B/s = 2 s; utilisation 2 / 14.64.
    assert links.index.is_unique
    busy = res.links.set_index(["src", "dst"]).loc[("s0", "sw")]
    assert busy["busy_s"] == pytest.approx(2.0)
    assert busy["utilisation"] == pytest.approx(2.0 / 14.64)
    analytic = count_traffic([trace], routes, LAYOUT[:, :, None], TrafficConfig(1.0, 2.0))
    np.testing.assert_array_equal(res.links["bytes"].to_numpy(), analytic.link_bytes)
    assert analytic.hops_per_token == pytest.approx(8 / 3)


def test_two_servers_chunks_pipeline_across_hops():
    _, _, res = _run(chunk_bytes=10)
    # The 20 B dispatch message becomes two 10 B chunks.
    #   g0->s0: chunk 1 0.0-0.1 (arr 0.11), chunk 2 0.1-0.2 (arr 0.21)
    # The server node gathers the uplink message (0.21) before the middle stage starts, then
    # the chunks pipeline across the two network hops:
    #   s0->sw: chunk 1 0.21-1.21 (arr 1.31), chunk 2 queued, 1.21-2.21 (arr 2.31)
    #   sw->s1: chunk 1 1.31-2.31 (arr 2.41), chunk 2 2.31-3.31 (arr 3.41)
    # and gathers again (3.41) before the downlink:
    #   s1->g1: 3.41-3.51 (arr 3.52), 3.51-3.61 (arr 3.62).  Unchunked it was 4.62.
    assert res.layers.iloc[0]["dispatch_done_s"] == pytest.approx(3.62)
    s0_sw = res.links.set_index(["src", "dst"]).loc[("s0", "sw")]
    # On s0->sw only the two dispatch chunks travel: chunk 1 waits 0, chunk 2 waits 1.0 s.
    assert s0_sw["peak_queue_delay_s"] == pytest.approx(1.0)
    assert s0_sw["mean_queue_delay_s"] == pytest.approx(0.5)
