"""Hand-computed reference cases for the SimPy replay (bytes and times worked out below)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model, two_server_cluster

from simulator.analytic import count_traffic
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.traffic_config import TrafficConfig

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


# --- single links and paths, driven directly (components + the engine's message train) ------

def _send(env, path, nbytes, chunk, at=0.0):
    """Start a message of nbytes on path at time ``at``; returns a list filled with its arrival."""
    from simulator.transfer import _Train

    done: list[float] = []

    def go():
        if at:
            yield env.timeout(at)
        hops = [((link, 1.0, 1),) for link in path]  # share 1: one unit per byte
        _Train(env, hops, nbytes, chunk, lambda _e: done.append(env.now))

    env.process(go())
    return done


def _links(env, specs):
    from simulator.components import BusyLog, LinkDirection

    log = BusyLog()
    return [LinkDirection(env, i, bw, lat, log) for i, (bw, lat) in enumerate(specs)], log


def test_one_message_over_one_link():
    import simpy

    env = simpy.Environment()
    (link,), log = _links(env, [(10.0, 0.5)])
    done = _send(env, [link], 25, chunk=10)
    env.run()
    link.flush()
    # Chunks 10, 10, 5 B at 10 B/s leave back to back: finish 1.0, 2.0, 2.5; + 0.5 latency.
    assert done == [pytest.approx(3.0)]
    assert link.units == 25 and link.chunks == 3
    assert link.busy_s == pytest.approx(2.5)
    # Waits behind the message's own chunks: 0, 1.0, 2.0 -> mean 1.0, peak 2.0.
    assert link.queue_sum_s / link.chunks == pytest.approx(1.0)
    assert link.queue_max_s == pytest.approx(2.0)
    assert list(log.start) == [0.0] and list(log.end) == [pytest.approx(2.5)]


def test_chunked_message_pipelines_over_three_hops():
    import simpy

    env = simpy.Environment()
    links, _ = _links(env, [(10.0, 0.5)] * 3)
    done = _send(env, links, 25, chunk=10)
    env.run()
    # hop 1: finish 1.0, 2.0, 2.5 -> arrive 1.5, 2.5, 3.0
    # hop 2: chunk 1 1.5-2.5 (arr 3.0), chunk 2 2.5-3.5 (arr 4.0), chunk 3 3.5-4.0 (arr 4.5)
    # hop 3: 3.0-4.0, 4.0-5.0, 5.0-5.5 -> last arrives 6.0
    # = pipelining formula: message time 2.5 + (hops - 1) x one chunk 1.0 + 3 x latency 0.5.
    assert done == [pytest.approx(6.0)]
    # Unchunked it would be store and forward: 3 x (2.5 + 0.5) = 9.0.
    env2 = simpy.Environment()
    links2, _ = _links(env2, [(10.0, 0.5)] * 3)
    done2 = _send(env2, links2, 25, chunk=100)
    env2.run()
    assert done2 == [pytest.approx(9.0)]


def test_faster_second_hop_books_the_work_and_keeps_the_train_causal():
    import simpy

    env = simpy.Environment()
    links, log = _links(env, [(10.0, 0.5), (20.0, 0.5)])
    done = _send(env, links, 25, chunk=10)
    env.run()
    for link in links:
        link.flush()
    # hop 1 arrivals 1.5, 2.5, 3.0 (spacing 1.0 > 0.5 s per chunk on hop 2)
    # hop 2 at 20 B/s: the last chunk (5 B) arrives 3.0, leaves 3.25, arrives 3.75
    assert done == [pytest.approx(3.75)]
    assert links[1].queue_max_s == pytest.approx(0.0)
    assert links[1].busy_s == pytest.approx(1.25)
    # the link books the train's 1.25 s of work from its first arrival (work-conserving)
    segs = [(s, e) for i, s, e in zip(log.link, log.start, log.end, strict=True) if i == 1]
    assert segs == [(1.5, pytest.approx(2.75))]


def test_two_half_rate_trains_share_a_fast_link_as_if_interleaved():
    import simpy

    env = simpy.Environment()
    # two 10 B/s feeders into one 20 B/s link: each train alone uses half of it
    links, _ = _links(env, [(10.0, 0.0), (10.0, 0.0), (20.0, 0.0)])
    a = _send(env, [links[0], links[2]], 100, chunk=10)
    b = _send(env, [links[1], links[2]], 100, chunk=10)
    env.run()
    # feeders deliver chunks at 1.0, 2.0, ..., 10.0; each needs 0.5 s on the shared link.
    # a: its last chunk leaves 10.0 + 0.5.  b: the link holds 10 s of work from 1.0, so b
    # ends at 11.0, the link's capacity bound (FIFO without filling a's gaps: b would start
    # after a at 10.5 and end at 15.5)
    assert a == [pytest.approx(10.5)] and b == [pytest.approx(11.0)]


def test_two_messages_contend_fifo_on_one_link():
    import simpy

    env = simpy.Environment()
    (link,), _ = _links(env, [(10.0, 0.0)])
    a = _send(env, [link], 20, chunk=10)
    b = _send(env, [link], 10, chunk=10, at=0.5)
    env.run()
    # A (2 chunks) arrives at 0 and holds the link 0-2.0; B arrives at 0.5 and is served
    # after A's whole message (messages are FIFO by their first chunk): 2.0-3.0.
    assert a == [pytest.approx(2.0)] and b == [pytest.approx(3.0)]
    # waits: A's chunks 0 and 1.0, B's 1.5 -> mean 2.5 / 3, peak 1.5
    assert link.queue_sum_s == pytest.approx(2.5)
    assert link.queue_max_s == pytest.approx(1.5)
    assert link.busy_s == pytest.approx(3.0)


