"""Flow-mode replays (one micro-batch in flight) split by micro-batch over Dask give exactly
the serial result; overlapping micro-batches are refused (experiments.split_replay)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_simulator_cli import _args, inputs  # noqa: F401  (the fixture)
from test_split_replay import _trace, client  # noqa: F401  (the fixture)

from experiments.cli import main
from experiments.split_replay import replay_flow_split
from simulator.cluster.builders import build_fat_tree, build_rail_optimized
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.flow_engine import simulate_flow
from simulator.microbatches import by_tokens
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError

FRAMES = ("links", "layers", "phases", "tokens", "gpus", "utilisation")


def _config(traffic: TrafficConfig, inflight: int = 1) -> SimConfig:
    return SimConfig(traffic=traffic, mode="flow", chunk_bytes=512,
                     inflight_microbatches=inflight, expert_time_per_route_s=1e-6)


@pytest.mark.parametrize("cluster", [build_fat_tree(4, 5), build_rail_optimized(4, 2, 2)],
                         ids=["fat-tree", "rail"])
@pytest.mark.parametrize("traffic", [TrafficConfig(), TrafficConfig(dispatch="deepep-normal",
                                                                    multipath="ecmp")],
                         ids=["spray", "deepep-normal-ecmp"])
def test_split_flow_replay_equals_serial_exactly(client, cluster, traffic):  # noqa: F811
    routes = build_route_table(cluster)
    layout = np.random.default_rng(0).integers(0, cluster.num_gpus, (3, 8, 2))
    trace = _trace(cluster.num_gpus)
    cfg = _config(traffic)
    serial = simulate_flow(by_tokens([trace], 23), routes, layout, cfg)
    split = replay_flow_split(client, by_tokens([trace], 23), routes, layout, cfg)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(split, name), getattr(serial, name),
                                      check_exact=True, obj=name)
    assert split.summary == serial.summary
    assert serial.layers["microbatch"].nunique() == 9  # ceil(200 / 23) micro-batches


def test_micro_batches_replayed_apart_add_up_to_one_continuous_run():
    # A no-op background forces the one continuous run (every micro-batch in one network);
    # with one in flight it must give what the parts give, up to float rounding of the
    # shifted times, and the same bytes and chunks exactly.
    cluster = build_fat_tree(4, 5)
    routes = build_route_table(cluster)
    layout = np.random.default_rng(1).integers(0, cluster.num_gpus, (3, 8, 1))
    trace = _trace(cluster.num_gpus, seed=2)
    cfg = _config(TrafficConfig())
    parts = simulate_flow(by_tokens([trace], 40), routes, layout, cfg)
    whole = simulate_flow(by_tokens([trace], 40), routes, layout, cfg,
                          background=lambda run: None)
    for col in ("bytes", "chunks"):
        np.testing.assert_array_equal(parts.links[col], whole.links[col])
    for col in ("start_s", "dispatch_done_s", "compute_done_s", "finish_s"):
        np.testing.assert_allclose(parts.layers[col], whole.layers[col], rtol=1e-12)
    np.testing.assert_allclose(parts.links["busy_s"], whole.links["busy_s"], rtol=1e-12)
    np.testing.assert_allclose(parts.tokens["moe_latency_s"], whole.tokens["moe_latency_s"],
                               rtol=1e-12)
    busy = parts.utilisation.groupby("link_dir")["busy_s"].sum()
    np.testing.assert_allclose(busy.to_numpy(), parts.links["busy_s"].to_numpy(), rtol=1e-9)


def test_overlapping_micro_batches_are_not_split(client):  # noqa: F811
    cluster = build_fat_tree(4, 5)
    routes = build_route_table(cluster)
    layout = np.zeros((3, 8), dtype=np.int64)
    with pytest.raises(InputError, match="2 micro-batches in flight overlap"):
        replay_flow_split(client, by_tokens([_trace(cluster.num_gpus)], 23), routes, layout,
                          _config(TrafficConfig(), inflight=2))


def test_cli_flow_split_on_a_scheduler_equals_the_serial_run(inputs, client):  # noqa: F811
    serial, split = inputs["tmp"] / "serial", inputs["tmp"] / "split"
    flags = ("--inflight", "1", "--microbatch-tokens", "20", "--no-report")
    assert main(_args(inputs, serial, "flow", *flags)) == 0
    assert main(_args(inputs, split, "flow", *flags, "--scheduler",
                      client.scheduler.address)) == 0
    for name in (*FRAMES, "summary"):
        pd.testing.assert_frame_equal(pd.read_parquet(split / f"{name}.parquet"),
                                      pd.read_parquet(serial / f"{name}.parquet"),
                                      check_exact=True, obj=name)
    assert json.loads((split / "meta.json").read_text())["execution"] == client.scheduler.address


def test_cli_refuses_to_split_overlapping_flow_replays(inputs, capsys):  # noqa: F811
    out = inputs["tmp"] / "flow"
    assert main(_args(inputs, out, "flow", "--workers", "2")) == 2  # --inflight 2 by default
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers with --mode flow" in err[0] and "--inflight 1" in err[0]
    assert not out.exists()
