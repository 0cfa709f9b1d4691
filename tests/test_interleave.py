"""DeepEP schemes interleave: messages travel as slices issued round-robin over their
destinations, and forwarding follows slice by slice (simulator.transfer).  Hand-computed."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from test_dispatch_schemes import two_rail_cluster

from simulator.analytic import count_traffic
from simulator.cluster.multipath import endpoints_of
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.dispatch import dispatch_plan
from simulator.engine import simulate
from simulator.timing import DEEPEP_SLICE_COPIES, MAX_SLICES_PER_MESSAGE
from simulator.traffic_config import TrafficConfig
from simulator.transfer import slice_rounds

# two_rail_cluster: NVLink 100 B/s + 0.01 s, NICs and spine links 10 B/s + 0.1 s; 10-element
# hidden state at 1 B per element: one copy is 10 B, a slice of 8 copies 80 B.
assert DEEPEP_SLICE_COPIES.value == 8


def _dispatch_done(scheme: str, experts: np.ndarray, bytes_per_element: float = 1.0,
                   layout: tuple[int, ...] = (2, 3)) -> float:
    """Dispatch time of tokens on g0; by default expert 0 on g2, expert 1 on g3 (server s1)."""
    routes = build_route_table(two_rail_cluster())
    trace = make_trace(tiny_model(experts=len(layout), top_k=experts.shape[2]), experts,
                       origin=[0] * experts.shape[0])
    traffic = TrafficConfig(bytes_per_element, 1.0, dispatch=scheme)
    cfg = SimConfig(traffic=traffic, chunk_bytes=1_000_000, expert_time_per_route_s=0.0)
    res = simulate([trace], routes, np.array([layout]), cfg)
    an = count_traffic([trace], routes, np.array([layout]), traffic)
    np.testing.assert_array_equal(res.links["bytes"].to_numpy(), an.link_bytes)
    return float(res.layers.iloc[0]["dispatch_done_s"])


def test_low_latency_slices_go_round_robin_over_destinations():
    # 16 tokens on g0, each to g2 and g3: two messages of 16 copies, two slices each, issued
    # A0 (to g2), B0 (to g3), A1, B1.  Each 80 B slice is one chunk (store and forward).
    # g0->s0 (0.8 s each): A0 arrives 0.81, B0 1.61, A1 2.41, B1 3.21.
    # g0's NIC s0->r0 (8 s each): A0 [0.81, 8.81] -> 8.91, B0 [8.81, 16.81] -> 16.91,
    #   A1 [16.81, 24.81] -> 24.91, B1 [24.81, 32.81] -> 32.91.
    # B crosses to rail 1: r0->sp, sp->r1, r1->s1 (8 s + 0.1 s each), s1->g3 (0.8 + 0.01):
    #   B1 32.91 -> 41.01 -> 49.11 -> 57.21 -> 58.02 (B0 is ahead of it on every hop).
    # (One train per message instead: B would leave the NIC at 33.71, and reach g3 at 83.62.)
    done = _dispatch_done("deepep-ll", np.array([[[0, 1]]] * 16))
    assert done == pytest.approx(58.02)


def test_normal_forwarding_follows_slice_by_slice():
    # 16 tokens on g0, each to g2 and g3: one RDMA message of 16 copies (one per token) to
    # g2's NIC, two slices R0 R1; fan-outs to g2 and g3 get the same two rounds.
    # g0->s0: R0 [0, 0.8] -> 0.81, R1 -> 1.61; s0->r0: R0 [0.81, 8.81] -> 8.91, R1 [8.81,
    # 16.81] -> 16.91; r0->s1: R0 [8.91, 16.91] -> 17.01, R1 [16.91, 24.91] -> 25.01; slice 0
    # of both fan-outs (80 B on s1->g2 and s1->g3 in parallel) [17.01, 17.81], slice 1
    # [25.01, 25.81] -> 25.82.
    # (Whole-message forwarding: the fan-out would start at 33.81 and end at 35.42.)
    done = _dispatch_done("deepep-normal", np.array([[[0, 1]]] * 16))
    assert done == pytest.approx(25.82)


def test_fewer_bytes_than_slices_keeps_bytes_exact():
    # 16 tokens to g2 (experts 0 and 1 both there), one also to g3 (expert 2): at 0.1 B per
    # element a copy is 1 B, so the fan-out to g3 (1 copy, 1 B) travels in the RDMA
    # message's two rounds as 1 B and 0 B; the bytes still equal the count (in the helper)
    experts = np.array([[[0, 1]]] * 15 + [[[0, 2]]])
    done = _dispatch_done("deepep-normal", experts, 0.1, layout=(2, 2, 3))
    # slices of 8 B: g0->s0 R0 [0, 0.08] -> 0.09, R1 -> 0.17; s0->r0 R0 [0.09, 0.89] -> 0.99,
    # R1 [0.89, 1.69] -> 1.79; r0->s1 R0 [0.99, 1.79] -> 1.89, R1 [1.79, 2.59] -> 2.69;
    # R1's 8 B to g2: [2.69, 2.77] -> 2.78 (g3's 0 B slice arrives at 2.69)
    assert done == pytest.approx(2.78)


def test_rounds_follow_the_network_message_and_are_capped():
    gs = np.array([0, 0, 1, 1])
    ep = endpoints_of(build_route_table(two_rail_cluster()))
    n = 8 * int(MAX_SLICES_PER_MESSAGE.value) + 40  # more copies than the cap's slices hold
    hosts = np.array([[2, 3]] * 20 + [[2, 2]] * (n - 20))
    plan = dispatch_plan("deepep-normal", np.zeros(n, dtype=np.int64), hosts, gs, ep)
    rounds = slice_rounds(plan)
    # RDMA message: n copies -> ceil(n / 8) = 21 slices, capped at 16; both fan-outs follow
    assert rounds.tolist() == [16, 16, 16]
    assert slice_rounds(plan.mirror()).tolist() == [16, 16, 16]
    plain = dispatch_plan("all-to-all", np.zeros(n, dtype=np.int64), hosts, gs, ep)
    assert set(slice_rounds(plain).tolist()) == {1}
