"""Engine layout files (TensorRT-LLM YAML, SGLang map) and the engine formats on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from engine_fixtures import routes, sglang_response, tiny_v3
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.cli import main
from placement import ExpertLayout
from placement.engine_layouts import from_trtllm_yaml, to_trtllm_yaml
from placement.layout_io import load_layout
from traces.infra.errors import InputError
from traces.io import read_trace

MODEL = tiny_v3()


def _copies(layout: ExpertLayout) -> list[list[set[int]]]:
    eg = layout.expert_gpus
    return [
        [set(eg[li, i][eg[li, i] >= 0].tolist()) for i in range(eg.shape[1])]
        for li in range(eg.shape[0])
    ]


def test_trtllm_yaml_hand_computed() -> None:
    # 2 ranks, one MoE layer (transformer layer 3), experts 0..2; expert 0 on both ranks.
    # rank 0 holds {0, 1}, rank 1 holds {0, 2}: 2 slots per rank, slots [0, 1 | 0, 2].
    layout = ExpertLayout(np.array([[[0, 1], [0, -1], [1, -1]]]), 2)
    obj = to_trtllm_yaml(layout, (3,))
    assert obj == {
        "num_slots": 4,
        "initial_global_assignments": {3: [0, 1, 0, 2]},
        "layer_updates_per_iter": 0,
    }
    assert _copies(from_trtllm_yaml(obj, (3,), 3, 2, "x")) == _copies(layout)


@given(seed=st.integers(0, 10_000), gpus=st.sampled_from([2, 4]), per=st.integers(1, 3))
@settings(max_examples=25, deadline=None)
def test_trtllm_yaml_round_trip_is_exact_up_to_slot_order(seed: int, gpus: int, per: int) -> None:
    """Engine YAML -> layout -> YAML gives every rank the same set of experts in every layer."""
    rng = np.random.default_rng(seed)
    experts = 16
    slots = gpus * max(per, -(-experts // gpus))
    assignments = {}
    for layer in MODEL.moe_layer_indices:
        row = np.concatenate([rng.permutation(experts), rng.integers(0, experts, slots - experts)])
        rng.shuffle(row)
        assignments[layer] = [int(x) for x in row]
    obj = {
        "num_slots": slots,
        "initial_global_assignments": assignments,
        "layer_updates_per_iter": 0,
    }
    text = yaml.safe_dump(obj)
    layout = from_trtllm_yaml(yaml.safe_load(text), MODEL.moe_layer_indices, experts, gpus, "f")
    back = to_trtllm_yaml(layout, MODEL.moe_layer_indices)
    per_rank = slots // gpus
    for layer in MODEL.moe_layer_indices:
        a = [set(assignments[layer][r * per_rank : (r + 1) * per_rank]) for r in range(gpus)]
        n = back["num_slots"] // gpus
        b = [
            set(back["initial_global_assignments"][layer][r * n : (r + 1) * n]) for r in range(gpus)
        ]
        assert a == b


def test_trtllm_yaml_bad_input() -> None:
    good = {"num_slots": 4, "initial_global_assignments": {3: [0, 1, 0, 2]}}
    with pytest.raises(InputError, match="num_slots = 4 is not a multiple of the cluster's 3 GPUs"):
        from_trtllm_yaml(good, (3,), 3, 3, "lb.yaml")
    with pytest.raises(InputError, match="expert 2 has no slot"):
        from_trtllm_yaml(
            {"num_slots": 4, "initial_global_assignments": {3: [0, 1, 0, 1]}}, (3,), 3, 2, "lb.yaml"
        )
    with pytest.raises(InputError, match="names no layout"):
        from_trtllm_yaml({"num_slots": 4, "layer_updates_per_iter": 2}, (3,), 3, 2, "lb.yaml")
    with pytest.raises(InputError, match="no MoE layer 4"):
        from_trtllm_yaml(good, (3, 4), 3, 2, "lb.yaml")


def test_load_layout_reads_engine_files_by_suffix(tmp_path: Path) -> None:
    layout = ExpertLayout(np.array([[[0, 1], [0, -1], [1, -1]]]), 2)
    (tmp_path / "lb.yaml").write_text(yaml.safe_dump(to_trtllm_yaml(layout, (3,))))
    assert _copies(load_layout(tmp_path / "lb.yaml", 1, 3, 2, (3,))) == _copies(layout)
    (tmp_path / "bad.yaml").write_text("num_slots: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_layout(tmp_path / "bad.yaml", 1, 3, 2, (3,))


def _model_file(d: Path) -> Path:
    p = d / "model.json"
    p.write_text(json.dumps(MODEL.to_dict()))
    return p


def test_cli_import_export_and_replay_an_engine_layout(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(5)
    arrays = [routes(rng, n, MODEL) for n in (4, 6)]
    src = tmp_path / "resp.jsonl"
    src.write_text("".join(json.dumps(sglang_response(a, MODEL)) + "\n" for a in arrays))
    model = str(_model_file(tmp_path))
    trace = tmp_path / "t.parquet"

    def import_(fmt: str, src_: Path, out: Path, *extra: str) -> int:
        argv = ["trace", "import", "--format", fmt, str(src_), "--model", model, *extra]
        return main([*argv, "--out", str(out)])

    assert import_("sglang-routed", src, trace) == 0
    assert read_trace(trace).num_tokens == 10
    stats = tmp_path / "stats"
    assert main(["trace", "export", str(trace), "--format", "trtllm", "--out", str(stats)]) == 0
    assert (stats / "rank0_raw.safetensors").exists()
    assert import_("trtllm", stats, tmp_path / "u.parquet") == 0
    assert np.array_equal(read_trace(tmp_path / "u.parquet").experts, read_trace(trace).experts)
    capsys.readouterr()
    # an option the format does not use is refused, naming the flag; nothing is written
    assert import_("sglang-routed", src, tmp_path / "x.parquet", "--ranks", "4") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--ranks applies to --format sglang-dump" in err
    assert not (tmp_path / "x.parquet").exists()


def test_cli_place_writes_a_trtllm_yaml_that_simulate_replays(tmp_path: Path, capsys) -> None:
    from traces import SynthConfig, generate_trace, model_preset
    from traces.io import write_trace

    model = model_preset("deepseek-moe-16b")
    trace = tmp_path / "t.parquet"
    write_trace(
        trace, generate_trace(SynthConfig(model, num_tokens=128, seq_len=8, num_gpus=16, seed=1))
    )
    lb = tmp_path / "lb.yaml"
    assert (
        main(
            [
                "place",
                "--fat-tree",
                "4",
                "4",
                "--stats",
                str(trace),
                "--strategy",
                "eplb",
                "--out",
                str(tmp_path / "l.parquet"),
                "--trtllm-yaml",
                str(lb),
            ]
        )
        == 0
    )
    from simulator.cluster.builders import build_fat_tree

    gpus = build_fat_tree(4, 4).num_gpus
    obj = yaml.safe_load(lb.read_text())
    assert obj["num_slots"] % gpus == 0 and set(obj["initial_global_assignments"]) == set(
        model.moe_layer_indices
    )
    layout = load_layout(
        tmp_path / "l.parquet", model.num_moe_layers, 64, gpus, model.moe_layer_indices
    )
    back = load_layout(lb, model.num_moe_layers, 64, gpus, model.moe_layer_indices)
    assert _copies(back) == _copies(layout)
