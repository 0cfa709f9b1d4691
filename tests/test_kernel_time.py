"""The DeepEP low-latency kernels' fixed time (simulator.receive_work.KERNEL_COST): added once
per phase to each GPU's arrival, in both engines, and to no other scheme.  Hand-computed; the
receive copies (tests/test_receive_work.py) are switched off here (an infinite copy rate)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from test_dispatch_schemes import two_rail_cluster

from simulator import calibration as cal
from simulator import receive_work
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import SimResult, simulate
from simulator.flow_engine import simulate_flow
from simulator.timing import (
    CALIBRATION,
    DEEPEP_LL_COMBINE_KERNEL_S,
    DEEPEP_LL_DISPATCH_KERNEL_S,
)
from simulator.traffic_config import TrafficConfig

K_D = DEEPEP_LL_DISPATCH_KERNEL_S.value
K_C = DEEPEP_LL_COMBINE_KERNEL_S.value
HBM = CALIBRATION["hbm_copy_bytes_per_s"].value


def fixed_only(monkeypatch, k_d: float = K_D, k_c: float = K_C) -> None:
    """deepep-ll with fixed times k_d, k_c and no receive copies."""
    inf = float("inf")
    monkeypatch.setitem(receive_work.KERNEL_COST, "deepep-ll", (
        receive_work.KernelCost(k_d, inf), receive_work.KernelCost(k_c, inf)))


def _layer(scheme: str, mode: str = "des") -> SimResult:
    """One token on g0 whose one expert sits on g2 (server s1, rail 0); no expert compute."""
    routes = build_route_table(two_rail_cluster())
    trace = make_trace(tiny_model(experts=2, top_k=1), np.array([[[0]]]), origin=[0])
    cfg = SimConfig(traffic=TrafficConfig(1.0, 1.0, dispatch=scheme), chunk_bytes=1_000_000,
                    expert_time_per_route_s=0.0, mode=mode)
    run = simulate if mode == "des" else simulate_flow
    return run([trace], routes, np.array([[2, 3]]), cfg)


def test_low_latency_phases_end_one_kernel_time_after_the_data(monkeypatch):
    fixed_only(monkeypatch)
    row = _layer("deepep-ll").layers.iloc[0]
    # two_rail_cluster: one 10 B copy g0 -> s0 -> r0 -> s1 -> g2, store and forward:
    # 10/100 + 0.01 = 0.11; + 10/10 + 0.1 = 1.21; + 1.1 = 2.31; + 0.11 = 2.42, then the
    # dispatch kernel's fixed time; combine (no compute) the same way back plus its own
    assert row["dispatch_done_s"] == pytest.approx(2.42 + K_D, rel=0, abs=1e-12)
    assert row["finish_s"] == pytest.approx(2 * 2.42 + K_D + K_C, rel=0, abs=1e-12)


def test_other_schemes_pay_no_kernel_time():
    for scheme in ("all-to-all", "deepep-normal"):
        assert scheme not in receive_work.KERNEL_COST
    # deepep-normal takes the same path here (g2 has local index 0, as g0): no kernel time
    row = _layer("deepep-normal").layers.iloc[0]
    assert row["dispatch_done_s"] == pytest.approx(2.42, rel=0, abs=1e-12)


@pytest.mark.parametrize("mode", ["des", "flow"])
def test_both_engines_add_exactly_the_kernel_times(mode, monkeypatch):
    fixed_only(monkeypatch)
    with_kernel = _layer("deepep-ll", mode).layers.iloc[0]
    fixed_only(monkeypatch, 0.0, 0.0)
    without = _layer("deepep-ll", mode).layers.iloc[0]
    assert with_kernel["dispatch_done_s"] - without["dispatch_done_s"] == pytest.approx(
        K_D, rel=1e-9)
    assert with_kernel["finish_s"] - without["finish_s"] == pytest.approx(K_D + K_C, rel=1e-9)


def test_calibration_low_latency_ep8_is_busiest_nvlink_plus_latencies_plus_kernel():
    # EP 8, one node: every copy crosses NVLink only, GPU -> server node -> GPU.  The busiest
    # GPU link (up or down) carries the most copies; its bandwidth time, the two NVLink hops'
    # latency (2 x 0.5 us), the kernel's fixed time and the receive work of the GPU with the
    # most of it make the phase: the GPUs send until about the phase's end, and a GPU's
    # receive work starts when its own sends have landed (simulator.receive_work).  Dispatch
    # copies every copy a GPU hosts (its own too) in and out of HBM: 2 x 7408 B each; combine
    # reads the 1024 copies of a GPU's 128 tokens and writes 128 rows of 14336 B.  Within
    # 0.2 us (the last 4 KB chunk's store and forward, the slices' interleaving) above, and
    # 1 us (one source's batch, ~150 copies, copied before the end) below
    ep = 8
    experts, origins = cal.routing(ep, cal.LL_TOKENS_PER_RANK, cal.TOP_K,
                                   np.random.default_rng(0))
    hosts = experts[:, 0, :] // (cal.EXPERTS // ep)
    away = hosts != origins[:, None]
    busiest = max(np.bincount(hosts[away]).max(), np.bincount(np.nonzero(away)[0]
                                                             // cal.LL_TOKENS_PER_RANK).max())
    bw = CALIBRATION["nvlink_bandwidth_bytes_per_s"].value
    hops = 2 * CALIBRATION["nvlink_latency_s"].value
    hosted = np.bincount(hosts.ravel()).max()
    work = (hosted * 2 * cal.LL_DISPATCH_BYTES / HBM,
            (cal.LL_TOKENS_PER_RANK * cal.TOP_K + cal.LL_TOKENS_PER_RANK) * cal.COMBINE_BYTES
            / HBM)
    (row,) = cal.low_latency(0, [ep])
    for sim_us, nbytes, k, w in ((row.dispatch_sim, cal.LL_DISPATCH_BYTES, K_D, work[0]),
                                 (row.combine_sim, cal.COMBINE_BYTES, K_C, work[1])):
        expect = busiest * nbytes / bw + hops + k + w
        assert expect - 1e-6 < sim_us * 1e-6 < expect + 0.2e-6


def test_nic_rate_is_the_pure_rdma_ep8_rows_net_of_the_kernel_times():
    # DeepEP's README before de8cfca: EP 8, NVLink off, 163 us (dispatch) and 318 us
    # (combine); 7/8 of 128 x 8 copies per rank cross the NIC: 896 x 7408 B / 149.8 us =
    # 44.3 GB/s (dispatch: receive copies overlap the arrivals); combine also reduces after
    # the last arrival, (1024 + 128) x 14336 B / 2.5 TB/s = 6.606 us: 896 x 14336 B /
    # (318 - 14.4 - 6.606 us) = 12845056 B / 296.994 us = 43.25 GB/s; mean 43.8 GB/s
    copies = cal.LL_TOKENS_PER_RANK * cal.TOP_K * 7 / 8
    reduce_s = 1152 * cal.COMBINE_BYTES / HBM
    assert reduce_s == pytest.approx(6.606e-6, rel=1e-4)
    rates = (copies * cal.LL_DISPATCH_BYTES / (163e-6 - K_D),
             copies * cal.COMBINE_BYTES / (318e-6 - K_C - reduce_s))
    assert rates == pytest.approx((44.31e9, 43.25e9), rel=1e-3)
    assert CALIBRATION["nic_bandwidth_bytes_per_s"].value == pytest.approx(sum(rates) / 2,
                                                                           rel=1e-3)
