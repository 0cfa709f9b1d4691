"""The low-latency kernels' receive work (simulator.receive_work): each GPU copies what it
received through its own memory, after its own NVLink sends have landed; dispatch while
later batches still arrive, combine after the last one.  Hand-computed cases, the clock's
two implementations (DES lists, flow arrays) against each other and against bounds, both
engines, and link bytes untouched."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dispatch_schemes import two_rail_cluster

from simulator import receive_work as rw
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.dispatch import PhasePlan
from simulator.engine import SimResult, simulate
from simulator.flow_engine import simulate_flow
from simulator.timing import DEEPEP_LL_COMBINE_KERNEL_S, DEEPEP_LL_DISPATCH_KERNEL_S
from simulator.traffic_config import TrafficConfig

K_D = DEEPEP_LL_DISPATCH_KERNEL_S.value
K_C = DEEPEP_LL_COMBINE_KERNEL_S.value


def _slow_copies(monkeypatch) -> None:
    """Copy rates that make the work visible: dispatch 10 B/s, combine 40 B/s."""
    monkeypatch.setitem(rw.KERNEL_COST, "deepep-ll", (
        rw.KernelCost(K_D, 10.0), rw.KernelCost(K_C, 40.0)))


def _layer(experts: list[list[int]], origin: list[int], mode: str) -> SimResult:
    routes = build_route_table(two_rail_cluster())
    trace = make_trace(tiny_model(experts=2, top_k=len(experts[0])),
                       np.array([[e] for e in experts]), origin=origin)
    cfg = SimConfig(traffic=TrafficConfig(1.0, 1.0, dispatch="deepep-ll"),
                    chunk_bytes=1_000_000, expert_time_per_route_s=0.0, mode=mode)
    run = simulate if mode == "des" else simulate_flow
    return run([trace], routes, np.array([[2, 3]]), cfg)


@pytest.mark.parametrize("mode", ["des", "flow"])
def test_one_remote_copy_hand_computed(mode, monkeypatch):
    _slow_copies(monkeypatch)
    row = _layer([[0]], [0], mode).layers.iloc[0]
    # one 10 B copy g0 -> g2 over the network, 2.42 s (tests/test_kernel_time.py); no NVLink
    # message, so g2's receive phase may start at once.  Dispatch: g2 reads and writes the
    # copy, 2 x 10 B / 10 B/s = 2 s, then the fixed time: 4.42 + K_D.  Combine back to g0
    # (no compute): arrives 2.42 s later, 6.84 + K_D; g0 reads the copy and writes the
    # token's row, (10 + 10) B / 40 B/s = 0.5 s, then its fixed time: 7.34 + K_D + K_C
    assert row["dispatch_done_s"] == pytest.approx(4.42 + K_D, rel=0, abs=1e-9)
    assert row["finish_s"] == pytest.approx(7.34 + K_D + K_C, rel=0, abs=1e-9)


@pytest.mark.parametrize("mode", ["des", "flow"])
def test_own_copies_and_the_send_sync(mode, monkeypatch):
    _slow_copies(monkeypatch)
    # token 0 on g2 picks expert 0 (on g2 itself) and expert 1 (on g3: NVLink, same server)
    row = _layer([[0, 1]], [2], mode).layers.iloc[0]
    # dispatch: g2 -> s1 -> g3, 10 B at 100 B/s + 0.01 s per hop: 0.11 + 0.11 = 0.22 s.  g3
    # copies it, 20 B / 10 B/s = 2 s: 2.22 + K_D.  (g2 receives no message: a GPU that
    # only computes its own routes starts at once, as before.)  Combine g3 -> g2, 0.22 s
    # more: 2.44 + K_D; g2 reads both copies (its own and g3's) and writes one row,
    # 3 x 10 B / 40 B/s = 0.75 s: 3.19 + K_D + K_C
    assert row["dispatch_done_s"] == pytest.approx(2.22 + K_D, rel=0, abs=1e-9)
    assert row["finish_s"] == pytest.approx(3.19 + K_D + K_C, rel=0, abs=1e-9)


@pytest.mark.parametrize("mode", ["des", "flow"])
def test_receive_phase_waits_for_own_nvlink_sends(mode, monkeypatch):
    _slow_copies(monkeypatch)
    # tokens 0-2 on g2 pick expert 1 (g3), token 3 on g3 expert 0 (g2): NVLink only
    res = _layer([[1], [1], [1], [0]], [2, 2, 2, 3], mode)
    # dispatch: g3 -> g2 10 B lands at 0.11 + 0.11 = 0.22; g2 -> g3 30 B at 0.31 + 0.31 =
    # 0.62.  g2 starts copying only when its own send has landed: 0.62 + 2 = 2.62 + K_D;
    # g3 (synced at 0.22) copies 3 x 2 s from 0.62: 6.62 + K_D, the dispatch's end.
    # combine: g2 -> g3 10 B from 2.62 + K_D lands at 2.84 + K_D; g3 -> g2 30 B from
    # 6.62 + K_D at 7.24 + K_D.  g3 waits for its own send (7.24), reads 1 copy and writes
    # 1 row, 20 B / 40 B/s: 7.74 + K_D + K_C (2.84 + 0.5 without the wait); g2 reads 3
    # copies and writes 3 rows from 7.24: 60 B / 40 B/s, 8.74 + K_D + K_C
    assert res.layers["dispatch_done_s"].iloc[0] == pytest.approx(6.62 + K_D, abs=1e-9)
    lat = res.tokens.sort_values("seq_id")["moe_latency_s"].to_numpy()
    np.testing.assert_allclose(lat, [8.74 + K_D + K_C] * 3 + [7.74 + K_D + K_C], atol=1e-9)


def _work(pipelined: bool, sync_from: list[int], start: list[float], message: list[float],
          fixed: float = 0.0) -> rw.ReceiveWork:
    return rw.ReceiveWork(fixed, np.array(start), np.array(message), np.array(sync_from),
                          pipelined)


def test_clock_waits_for_the_gpus_own_nvlink_sends():
    # messages 0: g1 -> g0 (NVLink), 1: g0 -> g1 (NVLink); work 2 s and 3 s, own work 1 s on
    # g0.  Message 0 lands at t=1: g0 may not start (its own send, message 1, travels).
    # Message 1 lands at t=5: g0 starts its 1 + 2 s, done 8; g1 (synced by message 0 at
    # t=1, its own 0 s done) copies message 1 from 5: done 8 too, each + fixed 0.5
    for clock in (rw.ReceiveClock(_work(True, [1, 0], [1.0, 0.0], [2.0, 3.0], 0.5),
                                  np.array([1, 1]), 0.0),):
        assert clock.scalar().arrived_one(0, 0, 1.0) == []
        assert sorted(clock.arrived_one(1, 1, 5.0)) == [(0, 8.5), (1, 8.5)]


def test_clock_pipelines_dispatch_and_holds_combine():
    # g0 receives messages 0 and 1 (RDMA: no sync), 2 s of work each, at t=1 and t=10
    # pipelined: the first is copied 1..3, the second 10..12; held: 10 + 4 = 14
    for pipelined, end in ((True, 12.0), (False, 14.0)):
        work = _work(pipelined, [-1, -1], [0.0, 0.0], [2.0, 2.0])
        clock = rw.ReceiveClock(work, np.array([2, 0]), 0.0).scalar()
        assert clock.arrived_one(0, 0, 1.0) == []
        assert clock.arrived_one(0, 1, 10.0) == [(0, end)]


@st.composite
def _arrivals(draw):
    g = draw(st.integers(2, 4))
    n = draw(st.integers(1, 10))
    down = draw(st.lists(st.integers(0, g - 1), min_size=n, max_size=n))
    up = [draw(st.sampled_from([x for x in range(g) if x != d] + [-1])) for d in down]
    times = sorted(draw(st.lists(st.floats(0, 10), min_size=n, max_size=n)))
    work = draw(st.lists(st.floats(0, 5), min_size=n, max_size=n))
    start = draw(st.lists(st.floats(0, 5), min_size=g, max_size=g))
    return g, np.array(down), np.array(up), np.array(times), work, start


@given(_arrivals(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_clock_scalar_and_vector_agree_and_respect_bounds(case, pipelined):
    g, down, up, times, work, start = case
    w = _work(pipelined, up.tolist(), start, work, fixed=0.25)
    left = np.bincount(down, minlength=g)
    scalar = rw.ReceiveClock(w, left, 0.0).scalar()
    vector = rw.ReceiveClock(w, left, 0.0)
    got_s: dict[int, float] = {}
    got_v: dict[int, float] = {}
    for m, t in enumerate(times.tolist()):
        got_s.update(scalar.arrived_one(int(down[m]), m, t))
        gpus, done = vector.arrived(down[m : m + 1], np.array([m]), t)
        got_v.update(zip(gpus.tolist(), done.tolist(), strict=True))
    assert got_s.keys() == got_v.keys() == set(down.tolist())  # every receiver, once
    for b, t_done in got_s.items():
        assert got_v[b] == pytest.approx(t_done, abs=1e-9)
        mine = down == b
        synced = times[up == b].max() if (up == b).any() else 0.0
        ready = max(times[mine].max(), synced)
        total = start[b] + sum(np.array(work)[mine])
        assert t_done <= ready + total + 0.25 + 1e-9  # no later than all work after ready
        if not pipelined:  # combine: all of it after the last arrival and the sync
            assert t_done == pytest.approx(ready + total + 0.25, abs=1e-9)
        else:  # at least the last batch's copy after it arrived
            assert t_done >= ready + 0.25 - 1e-9


def test_receive_bytes_per_phase():
    # plan: g0 -> g1 two copies (NVLink: up, down, no pair), g2 -> g1 one copy (network);
    # 100 B per copy, 1e3 B/s.  Dispatch: 2 x 100 B per copy: 0.4 s and 0.2 s; g1's own 3
    # copies 0.6 s.  Combine (the mirror): 100 B per copy: 0.2 s and 0.1 s; g1's 3 own
    # copies and 5 tokens: 0.8 s
    plan = PhasePlan(np.array([2, 1]), np.array([0, 2]), np.array([-1, 7]),
                     np.array([1, 1]), (np.zeros(0, int), np.zeros(0, int)), 4)
    own, tokens = np.array([0, 3, 0]), np.array([0, 5, 0])
    cost = (rw.KernelCost(0.0, 1e3), rw.KernelCost(0.0, 1e3))
    rw.KERNEL_COST["test-ll"] = cost
    try:
        d, c = rw.phase_work("test-ll", plan, (100.0, 100.0), own, tokens)
    finally:
        del rw.KERNEL_COST["test-ll"]
    assert d is not None and c is not None
    assert d.pipelined and not c.pipelined
    np.testing.assert_allclose(d.message_s, [0.4, 0.2])
    np.testing.assert_allclose(d.start_s, [0.0, 0.6, 0.0])
    np.testing.assert_array_equal(d.sync_from, [0, -1])  # the NVLink message holds g0
    np.testing.assert_allclose(c.message_s, [0.2, 0.1])
    np.testing.assert_allclose(c.start_s, [0.0, 0.8, 0.0])
    np.testing.assert_array_equal(c.sync_from, [1, -1])  # mirrored: g1 sends it back
    assert rw.phase_work("all-to-all", plan, (100.0, 100.0), own, tokens) == (None, None)


@pytest.mark.parametrize("mode", ["des", "flow"])
def test_local_copies_move_no_link_bytes(mode, monkeypatch):
    experts, origin = [[0, 1], [1, 0], [0, 1]], [0, 2, 3]
    fast = _layer(experts, origin, mode)
    _slow_copies(monkeypatch)
    slow = _layer(experts, origin, mode)
    assert slow.layers["finish_s"].iloc[0] > fast.layers["finish_s"].iloc[0]
    cols = [c for c in fast.links.columns if "bytes" in c]
    assert cols
    for c in cols:
        np.testing.assert_array_equal(fast.links[c].to_numpy(), slow.links[c].to_numpy())
