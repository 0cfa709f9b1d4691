"""Migration as traffic in the replays: the stall measured in the DES, the async streams beside
serving (DES and flow mode)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from experiments.rebalance import run_rebalance
from experiments.rebalance_config import RebalanceConfig
from simulator.cluster.builders import LinkDefaults, build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.flow_engine import simulate_flow
from simulator.migration import (
    BackgroundMigration,
    FlowBackgroundMigration,
    background_time_s,
    migration_link_bytes,
    stall_lower_bound_s,
    stall_time_s,
)
from traces import SynthConfig, generate_trace, model_preset
from traces.infra.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rebalance import _drift  # noqa: E402

B = 1e9  # every link 1 GB/s each way, no latency: a 1 MiB chunk takes c/B on every hop
C = 1 << 20  # SimConfig's default chunk_bytes
W = 4 * C  # an expert's weights: 4 chunks


@pytest.fixture(scope="module")
def tiny():
    # 2 servers of 2 GPUs on one edge switch, one NIC each: GPU 0 -> GPU 2 crosses 4 hops
    # (GPU 0 NVLink up, server 0 NIC up, edge -> server 1 NIC down, NVLink down to GPU 2)
    ld = LinkDefaults(gpus_per_server=2, nics_per_server=1, nvlink_bandwidth_bytes_per_s=B,
                      nic_bandwidth_bytes_per_s=B, switch_bandwidth_bytes_per_s=B,
                      nvlink_latency_s=0.0, network_latency_s=0.0)
    return build_route_table(build_fat_tree(4, 2, ld))


def _moves(src, dst):
    return np.array(src), np.array(dst)


@pytest.mark.parametrize(("src", "dst", "stall_chunks", "bound_chunks"), [
    # one move over 4 hops, cut-through: the first chunk needs 4 c/B, the other 3 follow at
    # c/B each: 4 + 3 = 7 chunk times; the busiest link carries 4 chunks
    ([0], [2], 7, 4),
    # two moves share the NIC uplink and the edge downlink (FIFO: GPU 0's message first): the
    # NIC carries A in [1, 5] and B in [5, 9], the edge link B in [6, 10] (A in [2, 6]), GPU
    # 3's downlink B's last chunk in [10, 11]: 11 chunk times; the NIC carries 8 chunks
    ([0, 1], [2, 3], 11, 8),
    # inside a server: NVLink up and down, 2 + 3 = 5
    ([0], [1], 5, 4),
])
def test_stall_measured_in_the_des_hand_computed(tiny, src, dst, stall_chunks, bound_chunks):
    moves = _moves(src, dst)
    assert stall_time_s(tiny, moves, W) == pytest.approx(stall_chunks * C / B)
    bound = stall_lower_bound_s(tiny, migration_link_bytes(tiny, moves, W))
    assert bound == pytest.approx(bound_chunks * C / B)


@pytest.mark.parametrize(("src", "dst", "chunks"), [
    # one piece in flight per sending GPU: each 1-chunk piece takes 4 hops x c/B = 4, and the
    # next leaves when it has arrived: 4 pieces x 4 = 16
    ([0], [2], 16),
    # GPU 0's two moves one after the other: 32
    ([0, 0], [2, 3], 32),
    # two senders share the NIC: B's first piece waits one chunk time there and arrives at 5;
    # then each stream's pieces take 4 each (they no longer collide): B ends at 5 + 12 = 17
    ([0, 1], [2, 3], 17),
])
def test_async_streams_on_the_idle_network_hand_computed(tiny, src, dst, chunks):
    assert background_time_s(tiny, _moves(src, dst), W) == pytest.approx(chunks * C / B)


def test_async_migration_beside_serving_costs_latency_and_switches_the_layout(tiny):
    model = replace(model_preset("deepseek-moe-16b"), moe_layer_indices=(1, 2),
                    num_routed_experts=4, top_k=1, hidden_size=1024)
    trace = generate_trace(SynthConfig(model, num_tokens=64, seq_len=1, num_gpus=4, seed=0))
    old = np.array([[0, 1, 2, 3], [0, 1, 2, 3]])
    new = np.array([[2, 3, 0, 1], [0, 1, 2, 3]])  # layer 1's experts swap servers: 4 moves
    moves = _moves([0, 1, 2, 3], [2, 3, 0, 1])
    config = SimConfig(microbatch_tokens=16)
    quiet = simulate([trace], tiny, new, config)
    bg = BackgroundMigration(moves, W, new)
    busy = simulate([trace], tiny, old, config, background=bg.start)
    assert busy.summary["latency_p99_s"] > quiet.summary["latency_p99_s"]
    # the streams share links with serving: never faster than on the idle network
    assert bg.done_s >= background_time_s(tiny, moves, W) - 1e-12
    assert bg.done_s <= float(busy.summary["makespan_s"]) + 1e-12


@pytest.mark.parametrize(("src", "dst", "chunks"), [
    # flow mode, whole moves as flows: 4 chunks at 1 GB/s = 4, then the last chunk's pipeline
    # fill over the 3 hops after the first = 3: 7
    ([0], [2], 7),
    ([0, 0], [2, 3], 14),  # GPU 0's two moves one after the other
    # two senders share the NIC at 0.5 GB/s each: 8, then the fill 3: both arrive at 11
    ([0, 1], [2, 3], 11),
    ([0], [1], 5),  # inside a server, 2 hops: 4 + 1
])
def test_async_streams_in_flow_mode_hand_computed(tiny, src, dst, chunks):
    old = np.array([[0, 1, 2, 3]])
    bg = FlowBackgroundMigration(_moves(src, dst), W, old)
    simulate_flow([], tiny, old, SimConfig(mode="flow"), background=bg.start)
    assert bg.done_s == pytest.approx(chunks * C / B)


def test_async_in_flow_mode_has_strict_low_priority(tiny):
    # the moves take only what serving leaves: serving is timed as on the old layout alone
    # (the DES's pieces delay it), and the moves finish no sooner than on the idle network
    model = replace(model_preset("deepseek-moe-16b"), moe_layer_indices=(1, 2),
                    num_routed_experts=4, top_k=1, hidden_size=1024)
    trace = generate_trace(SynthConfig(model, num_tokens=64, seq_len=1, num_gpus=4, seed=0))
    old = np.array([[0, 1, 2, 3], [0, 1, 2, 3]])
    new = np.array([[2, 3, 0, 1], [0, 1, 2, 3]])
    moves = _moves([0, 1, 2, 3], [2, 3, 0, 1])
    config = SimConfig(microbatch_tokens=16, mode="flow")
    alone = simulate_flow([trace], tiny, old, config)
    bg = FlowBackgroundMigration(moves, W, new)
    busy = simulate_flow([trace], tiny, old, config, background=bg.start)
    assert busy.summary["latency_p99_s"] == pytest.approx(alone.summary["latency_p99_s"])
    idle = FlowBackgroundMigration(moves, W, new)
    simulate_flow([], tiny, old, config, background=idle.start)
    assert bg.done_s >= idle.done_s - 1e-12
    assert bg.done_s == pytest.approx(float(busy.summary["makespan_s"]))  # the moves last


def test_rebalance_reports_the_des_stall_and_the_async_overlap(tmp_path):
    routes = build_route_table(build_fat_tree(4, 4))  # 32 GPUs
    path = _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    base = RebalanceConfig(strategy="ilp-origin", policy="periodic", interval_steps=4,
                           window_steps=4, mode="des")
    stall = run_rebalance(path, routes, base).timeline
    both = run_rebalance(path, routes, replace(base, migration="async")).timeline
    moved = stall["decision"] == "rebalance"
    assert moved.sum() == 2 and (stall["bytes_migrated"][moved] > 0).all()
    # stall: serving pauses for the DES-measured stall, at least the busiest link's time
    assert (stall["stall_s"] == stall["stall_des_s"]).all()
    assert (stall["stall_des_s"][moved] >= stall["stall_bound_s"][moved]).all()
    # async: no pause; the moves take at least the bound and cost latency
    assert (both["stall_s"] == 0).all()
    assert (both["migration_s"][moved] >= both["stall_bound_s"][moved]).all()
    assert (both["latency_p99_s"][moved] > both["latency_p99_s_without_migration"][moved]).all()
    assert np.allclose(both["latency_p99_s_without_migration"][moved],
                       stall["latency_p99_s"][moved])
    with pytest.raises(InputError, match="--migration async: .* add --mode des"):
        RebalanceConfig(migration="async")


def test_rebalance_async_in_flow_mode(tmp_path):
    routes = build_route_table(build_fat_tree(4, 4))  # 32 GPUs
    path = _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    t = run_rebalance(path, routes, RebalanceConfig(
        strategy="ilp-origin", policy="periodic", interval_steps=4, window_steps=4,
        mode="flow", migration="async")).timeline
    moved = t["decision"] == "rebalance"
    assert moved.sum() == 2 and (t["stall_s"] == 0).all() and "stall_des_s" not in t
    # the moves cannot beat the busiest link (flow mode merges events within 1 %)
    assert (t["migration_s"][moved] >= 0.99 * t["stall_bound_s"][moved]).all()
    assert t["latency_p99_s_without_migration"][moved].notna().all()


def test_report_draws_one_or_several_rebalance_runs(tmp_path, capsys):
    from experiments.cli import main

    path = _drift(tmp_path / "drift.parquet", tokens=512, step_tokens=64)
    assert main(["topology", "build", "fat-tree", "--param", "k=4", "--param", "num_servers=4",
                 "--out", str(tmp_path / "c.json")]) == 0
    runs = []
    for policy in ("static", "periodic"):
        runs.append(tmp_path / policy)
        every = [] if policy == "static" else ["--interval", "4"]  # static never decides
        assert main(["rebalance", "--trace", str(path), "--topology", str(tmp_path / "c.json"),
                     "--strategy", "ilp-origin", "--policy", policy, *every,
                     "--window", "4", "--out", str(runs[-1])]) == 0
    assert main(["report", str(runs[1])]) == 0
    assert "periodic" in (runs[1] / "report.html").read_text()
    both = tmp_path / "both"
    assert main(["report", *map(str, runs), "--out", str(both)]) == 0
    page = (both / "report.html").read_text()
    for name in ("rebalance_bytes.png", "rebalance_migration.png", "rebalance_stalls.png"):
        assert (both / name).is_file() and name in page
    assert "static: static" in page and "periodic: periodic" in page
    capsys.readouterr()
    assert main(["report", *map(str, runs)]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["report", str(runs[0]), str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a run directory of `moe-netsim rebalance`" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
