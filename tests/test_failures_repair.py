"""Keep-and-repair (placement.repair) and origins carried over to the surviving GPUs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.failure_scenarios import remap_origins
from placement.problem import ExpertLayout
from placement.repair import repair_layout
from traces.infra.errors import InputError


def _line_distance(n: int) -> np.ndarray:
    idx = np.arange(n)
    return np.abs(idx[:, None] - idx[None, :]).astype(float)


def test_lost_experts_go_to_the_nearest_free_slot():
    # 4 GPUs on a line (distance |i - j|), one layer of 4 experts, expert e on GPU e; GPU 1
    # fails: survivors 0, 2, 3 become 0, 1, 2.  Two slots per GPU: expert 1 goes to the nearest
    # survivors of old GPU 1, old GPUs 0 and 2 at distance 1; the tie goes to the one holding
    # fewer copies (both hold 1), then the lower index: old GPU 0 = new GPU 0.
    layout = ExpertLayout(np.array([[[0], [1], [2], [3]]]), 4)
    index_map = np.array([0, -1, 1, 2])
    r = repair_layout(layout, index_map, _line_distance(4), _line_distance(3), 2, 2)
    assert r.layout.expert_gpus[0, :, 0].tolist() == [0, 0, 1, 2]
    assert (r.lost_copies, r.reloaded, r.num_moves) == (1, 1, 0)  # no copy left: reloaded


def test_a_lost_replica_is_copied_from_the_surviving_one():
    # expert 0 on GPUs 1 and 3 (two copies), expert 1 on GPU 0, expert 2 on GPU 2; GPU 1
    # fails.  The lost copy goes to old GPU 0 or 2 (distance 1, one copy each: lower index 0
    # -> new 0); its weights come from the surviving copy on old GPU 3 = new GPU 2: one move.
    eg = np.array([[[1, 3], [0, -1], [2, -1]]])
    r = repair_layout(ExpertLayout(eg, 4), np.array([0, -1, 1, 2]), _line_distance(4),
                      _line_distance(3), 3, 3)
    assert r.layout.expert_gpus[0].tolist() == [[0, 2], [0, -1], [1, -1]]
    assert (r.lost_copies, r.reloaded, r.num_moves) == (1, 0, 1)
    assert (r.moves.src_gpu.tolist(), r.moves.dst_gpu.tolist()) == ([2], [0])


def test_no_free_slot_is_one_line():
    layout = ExpertLayout(np.array([[[0], [1]]]), 2)
    lost = r"1 lost copies \(first: expert 1 of MoE layer position 0\) do not fit"
    with pytest.raises(InputError, match=lost):
        repair_layout(layout, np.array([0, -1]), _line_distance(2), _line_distance(1), 1, 1)


@given(seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_repair_keeps_survivors_and_every_copy_count(seed):
    rng = np.random.default_rng(seed)
    G, L, E = 8, 3, 8
    eg = np.stack([rng.permutation(G)[:E] for _ in range(L)])[:, :, None]
    failed = rng.choice(G, size=int(rng.integers(1, 4)), replace=False)
    index_map = np.full(G, -1)
    keep = np.setdiff1d(np.arange(G), failed)
    index_map[keep] = np.arange(len(keep))
    n = len(keep)
    slots, per_layer = -(-L * E // n), -(-E // n)
    r = repair_layout(ExpertLayout(eg, G), index_map, _line_distance(G), _line_distance(n),
                      slots, per_layer)
    out = r.layout.expert_gpus
    survived = index_map[eg] >= 0
    assert (out[survived] == index_map[eg][survived]).all()  # survivors stay put
    assert (out >= 0).all() and out.max() < n
    counts = np.stack([np.bincount(out[li, :, 0], minlength=n) for li in range(L)])
    assert counts.max() <= per_layer and counts.sum(axis=0).max() <= slots
    assert r.lost_copies == int((~survived).sum()) == r.reloaded


def test_origins_of_failed_gpus_are_dealt_over_the_survivors():
    # GPUs 0..3, GPU 2 failed: survivors 0, 1, 3 -> 0, 1, 2; tokens on 2 go to 0, 1, 2, 0...
    trace = make_trace(tiny_model(), np.zeros((6, 1, 1)), origin=[2, 0, 2, 3, 2, 2])
    out = remap_origins(trace, np.array([0, 1, -1, 2]))
    assert out.origin_gpu.tolist() == [0, 0, 1, 2, 2, 0]
    assert remap_origins(trace, np.arange(4)) is trace


def test_place_repair_keeps_survivors_and_fills_the_lost_gpus(tmp_path, capsys):
    from experiments.cli import main
    from simulator.cluster.builders import build_leaf_spine
    from simulator.cluster.io import save_cluster
    from traces import SynthConfig, generate_trace, model_preset
    from traces.io import write_trace

    healthy = tmp_path / "h.json"
    save_cluster(build_leaf_spine(4, 2, 2), healthy)
    trace = tmp_path / "t.parquet"
    write_trace(trace, generate_trace(SynthConfig(model_preset("deepseek-moe-16b"),
                                                  num_tokens=128, num_gpus=32)))
    failed, old, new = tmp_path / "f.json", tmp_path / "l.csv", tmp_path / "r.csv"
    assert main(["topology", "whatif", str(healthy), "--fail", "server:s1",
                 "--out", str(failed)]) == 0
    assert main(["place", "--topology", str(healthy), "--fit", str(trace), "--strategy",
                 "round-robin", "--out", str(old)]) == 0
    # the trace's origins name GPUs of the healthy cluster: dp deals the tokens anew
    assert main(["place", "--topology", str(failed), "--repair", str(old), "--healthy",
                 str(healthy), "--fit", str(trace), "--origins", "dp", "--out", str(new)]) == 0
    assert "repaired 432 copies lost with 8 GPUs" in capsys.readouterr().out
    import pandas as pd

    a, b = pd.read_csv(old), pd.read_csv(new)
    index = np.array([*range(8), *[-1] * 8, *range(8, 24)])
    merged = a.merge(b, on=["layer", "expert", "replica"], suffixes=("_old", "_new"))
    stayed = index[merged["gpu_old"]] >= 0
    assert (merged.loc[stayed, "gpu_new"] == index[merged.loc[stayed, "gpu_old"]]).all()
    assert len(b) == len(a) and b["gpu"].max() == 23
