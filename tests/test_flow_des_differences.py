"""Where flow mode and the DES differ by design, on hand-computed cases
(docs/background/simulator.md, "The largest per-layer difference")."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from test_flow_mode import _star

from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.flow_engine import simulate_flow
from simulator.traffic_config import TrafficConfig


def test_max_min_feeds_a_hot_receiver_sooner_than_the_des_sender_fifo():
    # Star of four 1-GPU servers, network links 10 B/s, NVLink 1e6 B/s, no latency.  Tokens on
    # g0 and g1 each go to the experts on g2 and g3 (10 B a copy, one chunk per message).
    # Up messages g0->s0, g1->s1 (20 B): 2e-5 s.  Then four 10 B network messages.
    # DES: each sender starts its messages by destination, s2 before s3, and its uplink sends
    # them one after the other: s0->s2, s1->s2 in [0, 1], s0->s3, s1->s3 in [1, 2] (+2e-5).
    # sw->s2 serves its two in [1, 2] and [2, 3]; sw->s3 idles until 2, then [2, 3], [3, 4].
    # Down messages (20 B, 2e-5 s): g2's data at 3.00004, g3's at 4.00004.
    # Flow mode: max-min gives all four flows 5 B/s at once (each uplink and downlink is
    # shared by two): the last byte leaves at 2.00002, the one chunk's store-and-forward adds
    # 10 x (1/10 + 1/10 - 1/10) = 1 s: 3.00002, both down messages end at 3.00004.
    routes = build_route_table(_star((10.0,) * 4))
    model = tiny_model(experts=2, top_k=2)
    trace = make_trace(model, np.array([[[0, 1]], [[0, 1]]]), origin=np.array([0, 1]))
    layout = np.array([[2, 3]])
    cfg = dict(traffic=TrafficConfig(1.0, 2.0), chunk_bytes=1_000_000,
               expert_time_per_route_s=0.0)
    des = simulate([trace], routes, layout, SimConfig(**cfg))
    flow = simulate_flow([trace], routes, layout,
                         SimConfig(mode="flow", flow_tolerance=0.0, **cfg))
    assert des.layers["dispatch_done_s"].iloc[0] == pytest.approx(4.00004)
    assert flow.layers["dispatch_done_s"].iloc[0] == pytest.approx(3.00004)
    # the same bytes on every link in both: 10 B per network message hop, 20 B per NVLink
    np.testing.assert_array_equal(des.links["bytes"].to_numpy(), flow.links["bytes"].to_numpy())
