"""`moe-netsim simulate`: both modes end to end, and bad input caught before the run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import make_trace, tiny_model

from experiments.cli import main
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.io import cluster_to_dict, save_cluster
from traces.io import write_trace


@pytest.fixture
def inputs(tmp_path):
    cluster = build_fat_tree(4, 3)  # 24 GPUs
    topo = tmp_path / "cluster.json"
    save_cluster(cluster, topo)
    model = tiny_model(layers=2, experts=8, top_k=2, hidden=32)
    rng = np.random.default_rng(3)
    n = 90
    ids = np.stack([np.stack([rng.choice(8, 2, replace=False) for _ in range(2)])
                    for _ in range(n)])
    trace = make_trace(model, ids, step=np.repeat(np.arange(3), 30))  # no origins recorded
    trace_path = tmp_path / "trace.parquet"
    write_trace(trace_path, trace)
    rows = [(layer, e, (layer * 8 + e * 3) % cluster.num_gpus) for layer in (0, 1)
            for e in range(8)]
    layout = tmp_path / "layout.csv"
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(layout, index=False)
    return {"trace": trace_path, "topology": topo, "layout": layout, "tmp": tmp_path,
            "cluster": cluster}


def _args(inputs, out, mode, *extra):
    return ["simulate", "--mode", mode, "--trace", str(inputs["trace"]), "--topology",
            str(inputs["topology"]), "--layout", str(inputs["layout"]), "--out", str(out),
            *extra]


@pytest.mark.parametrize(
    "routing",
    [[], ["--multipath", "hash"], ["--dispatch", "deepep-ll", "--multipath", "ecmp",
                                   "--flows-per-pair", "2"]],
)
def test_des_and_analytic_write_runs_that_agree(inputs, capsys, routing):
    des = inputs["tmp"] / "des"
    ana = inputs["tmp"] / "ana"
    assert main(_args(inputs, des, "des", "--chunk-bytes", "512", *routing)) == 0
    assert main(_args(inputs, ana, "analytic", *routing)) == 0
    for name in ("links", "utilisation", "layers", "phases", "tokens", "gpus", "summary"):
        assert (des / f"{name}.parquet").exists(), name
    for name in ("links", "lower_bounds", "summary"):
        assert (ana / f"{name}.parquet").exists(), name
    assert (des / "COMPLETE").exists() and (ana / "COMPLETE").exists()
    d_links = pd.read_parquet(des / "links.parquet")
    a_links = pd.read_parquet(ana / "links.parquet")
    # split modes: fractional shares of copies, each count rounded to whole bytes
    np.testing.assert_allclose(d_links["bytes"], a_links["bytes"], atol=2)
    d_sum = pd.read_parquet(des / "summary.parquet").iloc[0]
    a_sum = pd.read_parquet(ana / "summary.parquet").iloc[0]
    assert d_sum["hops_per_token"] == a_sum["hops_per_token"]
    assert d_sum["microbatches"] == 3  # one per recorded step
    want = dict(zip(routing[::2], routing[1::2], strict=True))
    assert d_sum["dispatch"] == want.get("--dispatch", "all-to-all")
    assert d_sum["multipath"] == a_sum["multipath"] == want.get("--multipath", "spray")
    meta = json.loads((des / "meta.json").read_text())
    assert meta["mode"] == "des" and meta["status"] == "complete"
    assert "shared experts" in capsys.readouterr().out


def test_microbatch_tokens_option(inputs):
    out = inputs["tmp"] / "mb"
    assert main(_args(inputs, out, "des", "--microbatch-tokens", "40", "--inflight", "1")) == 0
    assert pd.read_parquet(out / "summary.parquet").iloc[0]["microbatches"] == 3  # 40+40+10


def _expect_error(inputs, capsys, out, *fragments):
    assert main(_args(inputs, out, "des")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for f in fragments:
        assert f in err, err
    assert not out.exists()


def test_layout_naming_missing_gpu(inputs, capsys):
    pd.DataFrame({"layer": [0, 1], "expert": [0, 0], "gpu": [0, 99]}).to_csv(
        inputs["layout"], index=False
    )
    _expect_error(inputs, capsys, inputs["tmp"] / "x", "gpu 99", "0..23")


def test_layout_expert_count_mismatch(inputs, capsys):
    rows = [(layer, e, e) for layer in (0, 1) for e in range(4)]  # 4 experts, trace has 8
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(inputs["layout"], index=False)
    _expect_error(inputs, capsys, inputs["tmp"] / "x", "has no GPU", "8 routed experts")


def test_layout_layer_mismatch(inputs, capsys):
    rows = [(layer, e, e) for layer in (0, 5) for e in range(8)]
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(inputs["layout"], index=False)
    _expect_error(inputs, capsys, inputs["tmp"] / "x", "layer 5", "MoE layers 0..1")


def test_zero_bandwidth_link(inputs, capsys):
    d = cluster_to_dict(inputs["cluster"])
    d["links"][-1]["bandwidth_bytes_per_s"] = 0
    inputs["topology"].write_text(json.dumps(d))
    _expect_error(inputs, capsys, inputs["tmp"] / "x", "bandwidth")


def test_origins_flag_sets_origins_warns_and_rejects_bad_models(inputs, capsys):
    out = inputs["tmp"] / "tenant"
    # cluster: k=4 fat tree with 3 servers of 8 GPUs; one tenant on server 1 = 8 of 24 GPUs
    assert main(_args(inputs, out, "des", "--origins", "tenants:1")) == 0
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert set(tokens["origin_gpu"]) == set(range(8, 16))
    assert "token origins cover 8 of the cluster's 24 GPUs" in capsys.readouterr().err
    for bad, msg in (("tenants:0/3", "server 3 is outside the cluster's servers 0..2"),
                     ("pd:0-1/1-2/4", "overlap"), ("nearest", "unknown origin model")):
        dest = inputs["tmp"] / "bad"
        assert main(_args(inputs, dest, "analytic", "--origins", bad)) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
        assert not dest.exists()


def test_flow_mode_writes_the_des_files_with_the_same_columns(inputs, capsys):
    des, flow = inputs["tmp"] / "des", inputs["tmp"] / "flow"
    assert main(_args(inputs, des, "des")) == 0
    assert main(_args(inputs, flow, "flow", "--flow-tolerance", "0")) == 0
    for name in ("links", "utilisation", "layers", "phases", "tokens", "gpus", "summary"):
        a, b = pd.read_parquet(des / f"{name}.parquet"), pd.read_parquet(flow / f"{name}.parquet")
        assert list(a.columns) == list(b.columns), name
        assert len(a) == len(b), name
    meta = json.loads((flow / "meta.json").read_text())
    assert meta["mode"] == "flow" and meta["sim_config"]["mode"] == "flow"
    assert meta["sim_config"]["flow_tolerance"] == 0
    links_d = pd.read_parquet(des / "links.parquet")
    links_f = pd.read_parquet(flow / "links.parquet")
    np.testing.assert_array_equal(links_d["bytes"], links_f["bytes"])
