"""Output frames, micro-batching, stragglers, reproducibility, a queueing-theory cross-check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy
from helpers import make_trace, tiny_model

from simulator.analytic import count_traffic
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.components import BusyLog, LinkDirection
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.microbatches import by_steps, by_tokens
from simulator.summaries import LINK_CLASSES
from simulator.traffic_config import TrafficConfig
from simulator.transfer import _Train


def _case(tokens: int = 300, seed: int = 1):
    cluster = build_fat_tree(4, 6)  # 48 GPUs, two pods
    routes = build_route_table(cluster)
    model = tiny_model(layers=3, experts=16, top_k=4, hidden=64)
    rng = np.random.default_rng(seed)
    ids = np.stack([
        np.stack([rng.choice(16, 4, replace=False, p=_skew(16)) for _ in range(3)])
        for _ in range(tokens)
    ])
    step = np.repeat(np.arange(3), -(-tokens // 3))[:tokens]
    trace = make_trace(model, ids, origin=rng.integers(0, cluster.num_gpus, tokens), step=step)
    layout = (np.arange(3)[:, None] * 16 + np.arange(16)[None, :]) % cluster.num_gpus
    return routes, trace, layout


def _skew(n: int) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=float) ** -1.0
    return p / p.sum()


FRAMES = ("links", "layers", "phases", "tokens", "gpus", "utilisation")


@pytest.mark.parametrize("multipath", ["spray", "ecmp", "hash"])
def test_same_inputs_give_identical_frames(multipath):
    routes, trace, layout = _case()
    cfg = SimConfig(traffic=TrafficConfig(multipath=multipath), chunk_bytes=4096)
    a = simulate(by_steps([trace]), routes, layout, cfg)
    b = simulate(by_steps([trace]), routes, layout, cfg)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.summary == b.summary


def test_summary_tiers_percentiles_and_notes():
    routes, trace, layout = _case()
    res = simulate(by_steps([trace]), routes, layout, SimConfig(chunk_bytes=4096))
    s = res.summary
    total = res.links["bytes"].sum()
    assert sum(s[f"bytes_{c}"] for c in LINK_CLASSES) == total
    assert s["network_link_bytes"] == s["bytes_leaf"] + s["bytes_spine"]
    assert 0 < s["network_bytes"] <= s["bytes_leaf"]
    lat = res.tokens["moe_latency_s"]
    assert s["latency_p50_s"] == pytest.approx(lat.quantile(0.5))
    assert s["latency_p99_s"] == pytest.approx(lat.quantile(0.99))
    assert s["latency_p50_s"] <= s["latency_p99_s"] <= s["makespan_s"]
    assert "shared experts" in s["shared_experts"]
    assert s["microbatches"] == 3 and s["tokens"] == trace.num_tokens
    assert len(res.tokens) == trace.num_tokens
    # phases: dispatch starts the layer, combine ends it
    ph = res.phases.pivot_table(index=["microbatch", "layer"], columns="phase",
                                values=["start_s", "finish_s"])
    lay = res.layers.set_index(["microbatch", "layer"])
    np.testing.assert_allclose(ph[("start_s", "dispatch")], lay["start_s"])
    np.testing.assert_allclose(ph[("finish_s", "combine")], lay["finish_s"])
    assert (res.phases["duration_s"] >= 0).all()
    # the analytic count gives the same tiers
    an = count_traffic(by_steps([trace]), routes, layout)
    for c in LINK_CLASSES:
        assert an.summary[f"bytes_{c}"] == s[f"bytes_{c}"]


def test_microbatches_by_steps_and_tokens_stream():
    _, trace, _ = _case(tokens=100)
    pieces = list(trace.iter_blocks(7))  # blocks that cut steps in the middle
    steps = list(by_steps(pieces))
    assert [b.num_tokens for b in steps] == [34, 34, 32]
    assert all(len(set(b.step.tolist())) == 1 for b in steps)
    sizes = [b.num_tokens for b in by_tokens(pieces, 40)]
    assert sizes == [40, 40, 20]
    got = np.concatenate([b.seq_id for b in by_tokens(pieces, 40)])
    np.testing.assert_array_equal(got, trace.seq_id)


def test_microbatch_tokens_recuts_the_stream():
    routes, trace, layout = _case(tokens=120)
    cfg = SimConfig(chunk_bytes=4096)
    a = simulate(by_tokens([trace], 50), routes, layout, cfg)
    b = simulate(trace.iter_blocks(13), routes, layout,
                 SimConfig(chunk_bytes=4096, microbatch_tokens=50))
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.summary["microbatches"] == 3


def test_overloaded_gpu_is_a_straggler():
    routes, trace, _ = _case(tokens=60)
    g = routes.num_gpus
    # all 16 experts of every layer on GPU 5: it computes every route
    layout = np.full((3, 16), 5)
    cfg = SimConfig(expert_time_per_route_s=1e-3, inflight_microbatches=1, chunk_bytes=4096)
    res = simulate([trace], routes, layout, cfg)
    routes_per_layer = trace.num_tokens * 4
    # GPU 5 computes 240 routes x 1 ms per layer: each layer lasts at least 0.24 s
    assert (res.layers["duration_s"] >= routes_per_layer * 1e-3 - 1e-12).all()
    busiest = res.gpus.sort_values("compute_busy_s").iloc[-1]
    assert busiest["gpu"] == 5 and busiest["routes"] == 3 * routes_per_layer
    assert res.gpus["compute_busy_s"].drop(index=5).sum() == 0
    assert g == len(res.gpus)


def test_inflight_microbatches_overlap():
    routes, trace, layout = _case()
    blocks = list(by_steps([trace]))
    one = simulate(blocks, routes, layout, SimConfig(chunk_bytes=4096, inflight_microbatches=1))
    two = simulate(blocks, routes, layout, SimConfig(chunk_bytes=4096, inflight_microbatches=2))
    # serial micro-batches: each starts after the previous one's last layer
    lay = one.layers.groupby("microbatch")
    assert (lay["start_s"].min().to_numpy()[1:] >= lay["finish_s"].max().to_numpy()[:-1]).all()
    assert two.summary["makespan_s"] < one.summary["makespan_s"]
    np.testing.assert_array_equal(one.links["bytes"], two.links["bytes"])


def test_theory_md1_link_waiting_time():
    """Theory cross-check (not a regression): one FIFO link fed by Poisson arrivals of
    equal messages is an M/D/1 queue; Pollaczek-Khinchine gives the mean wait
    W = rho * D / (2 * (1 - rho)).  At rho = 0.5: W = D / 2."""
    env = simpy.Environment()
    link = LinkDirection(env, 0, bandwidth_bytes_per_s=1000.0, latency_s=0.0, log=BusyLog())
    service = 1.0  # 1000 B at 1000 B/s
    rho = 0.5
    rng = np.random.default_rng(7)
    gaps = rng.exponential(service / rho, size=40_000)

    def arrivals():
        for gap in gaps:
            yield env.timeout(gap)
            _Train(env, [((link, 1.0, 1),)], 1000, 1000, lambda _e: None)

    env.process(arrivals())
    env.run()
    mean_wait = link.queue_sum_s / link.chunks
    assert mean_wait == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.05)
    assert link.busy_s / env.now == pytest.approx(rho, rel=0.03)


def test_copies_of_less_than_one_byte_are_refused():
    from traces.infra.errors import InputError

    routes, trace, layout = _case(tokens=10)
    with pytest.raises(InputError, match="at least one byte"):
        simulate([trace], routes, layout, SimConfig(traffic=TrafficConfig(0.001, 2.0)))
