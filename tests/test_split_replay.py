"""Analytic replays split by micro-batch over Dask give exactly the serial result.

Dask runs in this process (``local_cluster`` of threads, ``processes=False``, every port
chosen by the system), so the tests need no free fixed port and no worker start-up.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
from helpers import make_trace, tiny_model
from test_simulator_cli import _args, inputs  # noqa: F401  (the fixture)

from experiments.cli import main
from experiments.dask_cluster import local_cluster
from experiments.split_replay import count_traffic_split, map_in_order
from simulator.analytic import count_traffic
from simulator.cluster.builders import build_fat_tree, build_rail_optimized
from simulator.cluster.paths import build_route_table
from simulator.microbatches import by_tokens
from simulator.traffic_config import TrafficConfig


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    with local_cluster(2, processes=False) as cluster, Client(cluster) as c:
        yield c


def test_the_local_cluster_binds_no_fixed_port(client):
    # Dask's defaults are 8786 (scheduler) and 8787 (its HTTP server, started even with the
    # dashboard off): a second cluster on the machine would warn and move
    scheduler = client.cluster.scheduler
    assert scheduler.port not in (0, 8786, 8787)
    assert scheduler.http_server.port not in (0, 8786, 8787)


def _trace(num_gpus, tokens=200, seed=1):
    model = tiny_model(layers=3, experts=8, top_k=3, hidden=48)
    rng = np.random.default_rng(seed)
    ids = np.stack([np.stack([rng.choice(8, 3, replace=False) for _ in range(3)])
                    for _ in range(tokens)])
    return make_trace(model, ids, origin=rng.integers(0, num_gpus, tokens))


@pytest.mark.parametrize("cluster", [build_fat_tree(4, 5), build_rail_optimized(4, 2, 2)],
                         ids=["fat-tree", "rail"])
@pytest.mark.parametrize("traffic", [TrafficConfig(), TrafficConfig(multipath="hash"),
                                     TrafficConfig(dispatch="deepep-normal")],
                         ids=["spray", "hash", "deepep-normal"])
def test_split_equals_serial(client, cluster, traffic):
    routes = build_route_table(cluster)
    g = cluster.num_gpus
    layout = np.random.default_rng(0).integers(0, g, (3, 8, 2))
    trace = _trace(g)
    serial = count_traffic([trace], routes, layout, traffic, microbatch_tokens=23)
    split = count_traffic_split(client, by_tokens([trace], 23), routes, layout, traffic)
    pd.testing.assert_frame_equal(split.links, serial.links)
    pd.testing.assert_frame_equal(split.lower_bound_s, serial.lower_bound_s)
    assert split.summary == serial.summary


def test_parts_come_back_in_order_with_a_small_window(client):
    trace = _trace(8, tokens=50)
    got = list(map_in_order(client, _echo, by_tokens([trace], 3), (), window=2))
    assert [p.microbatch for p in got] == list(range(17))  # ceil(50 / 3) micro-batches


class _Part:
    def __init__(self, microbatch):
        self.microbatch = microbatch


def _echo(mb, block):
    return _Part(mb)


def test_cli_split_on_a_scheduler_equals_the_serial_run(inputs, client):  # noqa: F811
    serial, split = inputs["tmp"] / "serial", inputs["tmp"] / "split"
    assert main(_args(inputs, serial, "analytic", "--microbatch-tokens", "20")) == 0
    assert main(_args(inputs, split, "analytic", "--microbatch-tokens", "20", "--scheduler",
                      client.scheduler.address)) == 0
    for name in ("links", "lower_bounds", "summary"):
        pd.testing.assert_frame_equal(pd.read_parquet(split / f"{name}.parquet"),
                                      pd.read_parquet(serial / f"{name}.parquet"))
    meta = json.loads((split / "meta.json").read_text())
    assert meta["execution"] == client.scheduler.address


def test_unreachable_scheduler_is_one_line_and_writes_nothing(inputs, capsys):  # noqa: F811
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = inputs["tmp"] / "never"
    address = f"tcp://127.0.0.1:{port}"
    assert main(_args(inputs, out, "analytic", "--scheduler", address)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and address in err[0] and "no Dask scheduler answered" in err[0]
    assert not out.exists()


def test_split_flags_need_analytic_mode(inputs, capsys):  # noqa: F811
    out = inputs["tmp"] / "des"
    assert main(_args(inputs, out, "des", "--workers", "2")) == 2
    assert "--workers splits analytic and flow replays only" in capsys.readouterr().err
    assert not out.exists()
