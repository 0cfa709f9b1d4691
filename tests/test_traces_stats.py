"""Trace statistics: hand-computed case, brute-force cross-check, streaming, the command."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from helpers import make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.cli import main
from traces import ModelSpec
from traces.infra.errors import InputError
from traces.io import write_trace
from traces.stats import (
    activation_frame,
    coactivation_frame,
    gpu_load_frame,
    summarize_gpu_load,
    summarize_load,
    summarize_trace,
    transition_frame,
)

TOY = ModelSpec("toy", (0, 1), 4, 0, 2, 8)  # 2 MoE layers, 4 experts, top-2
# token 0: layer 0 -> {0, 1}, layer 1 -> {2, 3}
# token 1: layer 0 -> {0, 2}, layer 1 -> {2, 0}
# token 2: layer 0 -> {1, 0}, layer 1 -> {3, 2}
EXPERTS = np.array([[[0, 1], [2, 3]], [[0, 2], [2, 0]], [[1, 0], [3, 2]]])
PRIMARY = np.array([[0, 0, 1, 1], [1, 0, 0, 1]])  # GPU of each (layer, expert)


def _hosts(block):
    return PRIMARY[np.arange(2)[None, :, None], block.experts.astype(int)]


def test_hand_computed():
    tr = make_trace(TOY, EXPERTS)
    s = summarize_trace([tr], hosts=_hosts, num_gpus=2)
    # counts: layer 0: expert 0 in all 3 tokens, 1 in two, 2 in one;
    # layer 1: expert 0 once, 2 thrice, 3 twice
    np.testing.assert_array_equal(s.counts, [[3, 2, 1, 0], [1, 0, 3, 2]])
    act = activation_frame(s)
    want = np.array([3, 2, 1, 0, 1, 0, 3, 2]) / 3  # routes / 3 tokens
    np.testing.assert_allclose(act["activation_probability"], want)
    # co-activation: layer 0 (0,1) in tokens 0 and 2, (0,2) in token 1; layer 1 (2,3) x2, (0,2) x1
    co = coactivation_frame(s).set_index(["layer", "expert_a", "expert_b"])["tokens"].to_dict()
    assert co == {(0, 0, 1): 2, (0, 0, 2): 1, (1, 2, 3): 2, (1, 0, 2): 1}
    np.testing.assert_array_equal(np.diagonal(s.coactivation, axis1=1, axis2=2), s.counts)
    # transitions: t0 {0,1}x{2,3}, t1 {0,2}x{0,2}, t2 {0,1}x{2,3}
    tr_ = transition_frame(s).set_index(["expert_from", "expert_to"])
    assert tr_["tokens"].to_dict() == {
        (0, 0): 1, (0, 2): 3, (0, 3): 2, (1, 2): 2, (1, 3): 2, (2, 0): 1, (2, 2): 1
    }
    # P(to | from = 0) = (1, 3, 2) / 3 routes to expert 0; sums to top_k = 2
    np.testing.assert_allclose(tr_.loc[0, "probability"], [1 / 3, 1, 2 / 3])
    frame = transition_frame(s)
    assert set(frame["layer_from"]) == {0} and set(frame["layer_to"]) == {1}
    # imbalance max/mean: layer 0 3 / 1.5 = 2, layer 1 3 / 1.5 = 2
    np.testing.assert_allclose(summarize_load(s.counts, TOY)["imbalance_max_over_mean"], [2, 2])
    # GPU load: layer 0 GPU 0 holds experts 0, 1 -> 5 routes, GPU 1 -> 1; layer 1: 3 and 3
    np.testing.assert_array_equal(s.gpu_routes, [[5, 1], [3, 3]])
    g = gpu_load_frame(s, gpu_server=np.array([0, 0]))
    np.testing.assert_allclose(g["load_over_mean"], [5 / 3, 1 / 3, 1, 1])
    np.testing.assert_allclose(summarize_gpu_load(s)["gpu_imbalance_max_over_mean"], [5 / 3, 1])


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 25),
    block=st.integers(1, 10),
    seed=st.integers(0, 10_000),
    layers=st.integers(1, 3),
)
def test_streaming_matches_brute_force(n, block, seed, layers):
    model = ModelSpec("m", tuple(range(layers)), 6, 0, 3, 8)
    rng = np.random.default_rng(seed)
    e = np.stack([[rng.permutation(6)[:3] for _ in range(layers)] for _ in range(n)])
    tr = make_trace(model, e)
    s = summarize_trace(tr.iter_blocks(block))
    co = np.zeros((layers, 6, 6), int)
    tra = np.zeros((max(layers - 1, 0), 6, 6), int)
    for t in range(n):
        for li in range(layers):
            for a, b in itertools.product(e[t, li], e[t, li]):
                co[li, a, b] += 1
            if li + 1 < layers:
                for a, b in itertools.product(e[t, li], e[t, li + 1]):
                    tra[li, a, b] += 1
    assert s.num_tokens == n
    np.testing.assert_array_equal(s.coactivation, co)
    np.testing.assert_array_equal(s.transitions, tra)
    np.testing.assert_array_equal(s.counts, np.diagonal(co, axis1=1, axis2=2))


def test_without_pairs_or_layout():
    s = summarize_trace([make_trace(TOY, EXPERTS)], pairs=False)
    assert s.coactivation is None and s.gpu_routes is None
    for f in (coactivation_frame, transition_frame, gpu_load_frame):
        with pytest.raises(InputError):
            f(s)
    with pytest.raises(InputError, match="no tokens"):
        summarize_trace([])


def test_cli_stats(tmp_path, capsys):
    trace = write_trace(tmp_path / "t.parquet", make_trace(TOY, EXPERTS))
    np.save(tmp_path / "layout.npy", PRIMARY)
    out = tmp_path / "st"
    assert main(["trace", "stats", str(trace), "--out", str(out),
                 "--layout", str(tmp_path / "layout.npy")]) == 0
    assert "3 tokens" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"activation.parquet", "coactivation.parquet", "transitions.parquet",
            "layer_load.parquet", "gpu_load.parquet", "expert_load.png", "meta.json",
            "COMPLETE"} <= names
    gpu = pd.read_parquet(out / "gpu_load.parquet")
    np.testing.assert_array_equal(gpu["routes"], [5, 1, 3, 3])
    # the same layout as the tidy table of placement/layout_io.py
    pd.DataFrame({"layer": [0, 0, 0, 0, 1, 1, 1, 1], "expert": [0, 1, 2, 3] * 2,
                  "gpu": PRIMARY.ravel()}).to_csv(tmp_path / "layout.csv", index=False)
    assert main(["trace", "stats", str(trace), "--out", str(out), "--overwrite", "--no-pairs",
                 "--layout", str(tmp_path / "layout.csv")]) == 0
    assert not (out / "coactivation.parquet").exists()
    np.testing.assert_array_equal(pd.read_parquet(out / "gpu_load.parquet")["routes"], [5, 1, 3, 3])
    # bad layout: no directory is left behind
    np.save(tmp_path / "bad.npy", PRIMARY[:1])
    assert main(["trace", "stats", str(trace), "--out", str(tmp_path / "x"),
                 "--layout", str(tmp_path / "bad.npy")]) == 2
    assert "layout must be an integer array [2 layers, 4 experts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_stats_replicas_need_topology(tmp_path, capsys):
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.io import save_cluster

    cluster = build_fat_tree(k=4, num_servers=2)  # 2 servers x 8 GPUs
    save_cluster(cluster, tmp_path / "c.json")
    # every expert on GPU 0 (server 0) and GPU 8 (server 1); all tokens start on GPU 9
    layout = np.stack([np.zeros((2, 4), int), np.full((2, 4), 8)], axis=2)
    np.save(tmp_path / "rep.npy", layout)
    trace = write_trace(tmp_path / "t.parquet",
                        make_trace(TOY, EXPERTS, origin=np.full(3, 9)))
    args = ["trace", "stats", str(trace), "--layout", str(tmp_path / "rep.npy"), "--no-pairs"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "pass --topology" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--topology", str(tmp_path / "c.json")]) == 0
    gpu = pd.read_parquet(tmp_path / "b" / "gpu_load.parquet")
    # the replica on GPU 8 shares the origin's server: all 6 routes per layer land there
    assert gpu.loc[gpu["routes"] > 0, "gpu"].unique().tolist() == [8]
    assert gpu.groupby("layer")["routes"].sum().tolist() == [6, 6]
    assert set(gpu["server"]) == {0, 1}
