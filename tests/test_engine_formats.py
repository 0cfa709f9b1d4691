"""Engine formats in and out: SGLang, vLLM, TensorRT-LLM, Megatron, top-k Parquet."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import (
    routes,
    sglang_per_token_dump,
    sglang_response,
    tiny_v3,
    trtllm_stats,
    vllm_response,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.importers import import_load_stats, import_trace
from traces.importers.exports import export_trace
from traces.infra.errors import InputError
from traces.io import read_trace

torch = pytest.importorskip("torch")
MODEL = tiny_v3()
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model_file(d: Path) -> Path:
    p = d / "model.json"
    p.write_text(json.dumps(MODEL.to_dict()))
    return p


def _permutation_map(rng: np.random.Generator, replicas: int = 1) -> np.ndarray:
    """[hidden layers, P]: every logical expert `replicas` times, shuffled."""
    hidden = max(MODEL.moe_layer_indices) + 1
    rows = [
        rng.permutation(np.repeat(np.arange(MODEL.num_routed_experts), replicas))
        for _ in range(hidden)
    ]
    return np.stack(rows).astype(np.int64)


def test_sglang_dump_maps_physical_ids_and_keeps_ranks_and_passes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pmap = _permutation_map(rng, replicas=2)  # 32 physical copies of 16 experts
    passes = [{0: [3, 2], 1: [4]}, {0: [1], 1: [2, 2]}]
    logical = sglang_per_token_dump(tmp_path / "dump", MODEL, passes, pmap, rng)
    import_trace("sglang-dump", tmp_path / "dump", tmp_path / "t.parquet", MODEL)
    t = read_trace(tmp_path / "t.parquet")
    # (pass, rank) order: (0,0) 5 tokens, (0,1) 4, (1,0) 1, (1,1) 4 -> 14 tokens
    assert t.num_tokens == 14
    want = np.concatenate([logical[k] for k in [(0, 0), (0, 1), (1, 0), (1, 1)]])
    assert np.array_equal(t.experts, want)
    assert t.origin_gpu.tolist() == [0] * 5 + [1] * 4 + [0] * 1 + [1] * 4
    assert t.step.tolist() == [0] * 9 + [1] * 5
    # sequences: extend spans 3,2 | 4 | 1 | 2,2 -> ids 0,0,0,1,1,2,2,2,2,3,4,4,5,5
    assert t.seq_id.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5]
    assert t.position.tolist()[:5] == [0, 1, 2, 0, 1]


@given(seed=st.integers(0, 10_000), passes=st.integers(1, 3), ranks=st.integers(1, 3))
@SETTINGS
def test_sglang_dump_round_trip(seed: int, passes: int, ranks: int) -> None:
    rng = np.random.default_rng(seed)
    pmap = _permutation_map(rng)  # one copy each: the physical id is determined by the logical
    layout = [
        {r: [int(x) for x in rng.integers(1, 4, rng.integers(1, 3))] for r in range(ranks)}
        for _ in range(passes)
    ]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sglang_per_token_dump(d / "a", MODEL, layout, pmap, rng)
        import_trace("sglang-dump", d / "a", d / "t.parquet", MODEL)
        from traces.importers.sglang_dump import write_sglang_dump
        from traces.io import iter_trace

        write_sglang_dump(iter_trace(d / "t.parquet"), d / "b", pmap)
        for r in range(ranks):
            a = torch.load(next((d / "a").glob(f"*_{r}.pt")), weights_only=True)
            b = torch.load(next((d / "b").glob(f"*_{r}.pt")), weights_only=True)
            assert torch.equal(a["last_physical_to_logical_map"], b["last_physical_to_logical_map"])
            assert len(a["records"]) == len(b["records"])
            for ra, rb in zip(a["records"], b["records"], strict=True):
                for key in ("forward_pass_id", "rank", "positions", "extend_seq_lens"):
                    assert ra[key] == rb[key], key
                assert torch.equal(ra["topk_ids_of_layer"], rb["topk_ids_of_layer"])


def test_sglang_dump_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pmap = _permutation_map(rng)
    sglang_per_token_dump(tmp_path / "d", MODEL, [{0: [2], 2: [1]}], pmap, rng)
    with pytest.raises(InputError, match="ranks missing from the dump: 1"):
        import_trace("sglang-dump", tmp_path / "d", tmp_path / "t.parquet", MODEL)
    sglang_per_token_dump(tmp_path / "tbo", MODEL, [{0: [2]}], pmap, rng, gatherer_key="child_a")
    with pytest.raises(InputError, match="two-batch-overlap"):
        import_trace("sglang-dump", tmp_path / "tbo", tmp_path / "t.parquet", MODEL)
    small = pmap[:, :8] % 8  # a map with 8 physical experts: ids 8..15 are outside it
    sglang_per_token_dump(tmp_path / "p", MODEL, [{0: [3]}], pmap, rng)
    f = next((tmp_path / "p").glob("*.pt"))
    obj = torch.load(f, weights_only=True)
    obj["last_physical_to_logical_map"] = torch.from_numpy(np.tile(small[:1], (small.shape[0], 1)))
    obj["records"][0]["topk_ids_of_layer"][1, 0, 0] = 12
    torch.save(obj, f)
    with pytest.raises(InputError, match="physical expert 12 is outside the recorded map"):
        import_trace("sglang-dump", tmp_path / "p", tmp_path / "t.parquet", MODEL)
    assert not (tmp_path / "t.parquet").exists()
    sglang_per_token_dump(tmp_path / "ok", MODEL, [{0: [2]}], pmap, rng)
    for other in (tiny_v3(layers=2), tiny_v3(layers=4), tiny_v3(top_k=2)):
        with pytest.raises(InputError, match="wrong --model"):
            import_trace("sglang-dump", tmp_path / "ok", tmp_path / "t.parquet", other)
    with pytest.raises(InputError, match=r"ranks missing from the dump: 1, 2 \(of 0..2\)"):
        import_trace(
            "sglang-dump", tmp_path / "ok", tmp_path / "t.parquet", MODEL, options={"ranks": 3}
        )


def test_sglang_dump_with_mixed_geometries_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pmap = _permutation_map(rng)
    sglang_per_token_dump(tmp_path / "d", MODEL, [{0: [2], 1: [2]}], pmap, rng)
    f = next((tmp_path / "d").glob("*_1.pt"))
    obj = torch.load(f, weights_only=True)
    obj["records"][0]["topk_ids_of_layer"] = obj["records"][0]["topk_ids_of_layer"][:, :, :6]
    torch.save(obj, f)  # rank 1 recorded 6 top-k columns, rank 0 eight
    with pytest.raises(InputError, match="mixed model geometries"):
        import_trace("sglang-dump", tmp_path / "d", tmp_path / "t.parquet", MODEL)
    assert not (tmp_path / "t.parquet").exists()


def test_sglang_stat_and_per_pass_dumps_become_load_statistics(tmp_path: Path) -> None:
    hidden = max(MODEL.moe_layer_indices) + 1
    counts = np.arange(2 * hidden * 16, dtype=np.int64).reshape(2, hidden, 16)
    d = tmp_path / "stat"
    d.mkdir()
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.from_numpy(counts),
            "average_utilization_rate_over_window": None,
        },
        d / "expert_distribution_recorder_1.5.pt",
    )
    stats = import_load_stats("sglang-dump", d, MODEL)
    assert np.array_equal(stats.counts, counts.sum(axis=0)[[1, 2, 3]])
    # per_pass: physical counts [layers, P] mapped through the map; P = 16, map reversed
    pmap = np.tile(np.arange(16)[::-1], (hidden, 1))
    phys = np.zeros((hidden, 16), dtype=np.int64)
    phys[1, 0] = 5  # physical 0 is logical 15 in layer 1
    p = tmp_path / "pp"
    p.mkdir()
    torch.save(
        {
            "records": [
                {
                    "forward_pass_id": 0,
                    "rank": 0,
                    "gatherer_key": "primary",
                    "global_physical_count": torch.from_numpy(phys),
                }
            ],
            "last_physical_to_logical_map": torch.from_numpy(pmap),
        },
        p / "expert_distribution_recorder_1.5_0.pt",
    )
    stats = import_load_stats("sglang-dump", p, MODEL)
    assert stats.counts[0, 15] == 5 and stats.counts.sum() == 5


@pytest.mark.parametrize("fmt", ["sglang-routed", "vllm-routed"])
@given(seed=st.integers(0, 10_000), requests=st.integers(1, 4))
@SETTINGS
def test_api_responses_round_trip(fmt: str, seed: int, requests: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = [routes(rng, int(rng.integers(1, 6)), MODEL) for _ in range(requests)]
    build = sglang_response if fmt == "sglang-routed" else vllm_response
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lines = [json.dumps(build(a, MODEL)) for a in arrays]
        (d / "in.jsonl").write_text("\n".join(lines) + "\n")
        import_trace(fmt, d / "in.jsonl", d / "t.parquet", MODEL)
        t = read_trace(d / "t.parquet")
        assert np.array_equal(t.experts, np.concatenate(arrays))
        export_trace(fmt, d / "t.parquet", d / "out.jsonl")
        back = [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]
        key = ("meta_info", "routed_experts") if fmt == "sglang-routed" else None
        for orig, new in zip(lines, back, strict=True):
            o = json.loads(orig)
            if key:
                assert o["meta_info"]["routed_experts"] == new["meta_info"]["routed_experts"]
            else:
                assert o["choices"][0]["routed_experts"] == new["choices"][0]["routed_experts"]


def test_api_responses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"meta_info": {"id": "x"}}) + "\n")
    with pytest.raises(InputError, match="line 1: no meta_info.routed_experts"):
        import_trace("sglang-routed", tmp_path / "a.jsonl", tmp_path / "t.parquet", MODEL)
    # 5 int32 values is not a whole token of 4 layers x top-4
    bad = {"meta_info": {"routed_experts": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="not a whole number of tokens"):
        import_trace("sglang-routed", tmp_path / "b.json", tmp_path / "t.parquet", MODEL)
    assert not (tmp_path / "t.parquet").exists()


@given(seed=st.integers(0, 10_000), iters=st.integers(1, 3), ranks=st.integers(1, 3))
@SETTINGS
def test_trtllm_raw_round_trip_and_counts(seed: int, iters: int, ranks: int) -> None:
    from safetensors.numpy import load_file

    rng = np.random.default_rng(seed)
    batches = {
        (it, r): routes(rng, int(rng.integers(1, 5)), MODEL)
        for it in range(100, 100 + iters)
        for r in range(ranks)
    }
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        trtllm_stats(d / "a", MODEL, batches)
        import_trace("trtllm", d / "a", d / "t.parquet", MODEL)
        t = read_trace(d / "t.parquet")
        assert np.array_equal(t.experts, np.concatenate([batches[k] for k in sorted(batches)]))
        assert set(zip(t.step.tolist(), t.origin_gpu.tolist(), strict=True)) == set(batches)
        export_trace("trtllm", d / "t.parquet", d / "b")
        for r in range(ranks):
            for name in (f"rank{r}_raw.safetensors", f"rank{r}.safetensors"):
                a, b = load_file(str(d / "a" / name)), load_file(str(d / "b" / name))
                assert a.keys() == b.keys()
                assert all(np.array_equal(a[k], b[k]) for k in a)
        (d / "a" / f"rank{0}_raw.safetensors").unlink()
        if ranks == 1:  # counts only: load statistics summed over iterations and ranks
            stats = import_load_stats("trtllm", d / "a", MODEL)
            want = np.zeros((3, 16))
            for sel in batches.values():
                for li in range(3):
                    want[li] += np.bincount(sel[:, li].ravel(), minlength=16)
            assert np.array_equal(stats.counts, want)


def test_trtllm_wrong_model_and_dense_layer_keys(tmp_path: Path) -> None:
    trtllm_stats(tmp_path / "s", MODEL, {(0, 0): routes(np.random.default_rng(0), 2, MODEL)})
    with pytest.raises(InputError, match="num_experts_per_token = 4.*wrong --model"):
        import_trace("trtllm", tmp_path / "s", tmp_path / "t.parquet", tiny_v3(top_k=2))
    from safetensors.numpy import save_file

    save_file({"0_0": np.zeros((2, 4), np.int32)}, str(tmp_path / "s" / "rank0_raw.safetensors"))
    with pytest.raises(InputError, match="layer 0 is not a MoE layer"):
        import_trace("trtllm", tmp_path / "s", tmp_path / "t.parquet", MODEL)


@pytest.mark.parametrize("layout", ["tensor", "list", "dict"])
def test_megatron_forms_and_round_trip(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(3)
    steps = [routes(rng, n, MODEL) for n in (3, 5)]
    d = tmp_path / "replay"
    d.mkdir()
    for s, arr in enumerate(steps):
        t = torch.from_numpy(arr)
        obj = {"tensor": t, "list": [t[:, i] for i in range(3)], "dict": {"routing_indices": t}}
        torch.save(obj[layout], d / f"step{s}.pt")
    import_trace("megatron", d, tmp_path / "t.parquet", MODEL)
    tr = read_trace(tmp_path / "t.parquet")
    assert np.array_equal(tr.experts, np.concatenate(steps))
    assert tr.step.tolist() == [0] * 3 + [1] * 5
    export_trace("megatron", tmp_path / "t.parquet", tmp_path / "back")
    for s, arr in enumerate(steps):
        back = torch.load(tmp_path / "back" / f"step{s}.pt", weights_only=True)
        assert np.array_equal(back["routing_indices"].numpy(), arr)


def test_topk_parquet_wide_and_long(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    experts = routes(rng, 7, MODEL)
    scores = rng.random((7, 3, 4)).astype(np.float32)
    seq = np.array([0, 0, 0, 1, 1, 2, 2])
    pq.write_table(
        pa.table({"sample_id": seq, "topk_ids": experts.tolist(), "topk_weights": scores.tolist()}),
        tmp_path / "wide.parquet",
    )
    import_trace(
        "topk-parquet", tmp_path / "wide.parquet", tmp_path / "t.parquet", MODEL, chunk_tokens=3
    )
    t = read_trace(tmp_path / "t.parquet")
    assert np.array_equal(t.experts, experts) and np.allclose(t.gates, scores)
    assert t.position.tolist() == [0, 1, 2, 0, 1, 0, 1]  # counted within each sample
    long = pa.table(
        {"layer": np.tile([1, 2, 3], 7), "expert_indices": experts.reshape(21, 4).tolist()}
    )
    pq.write_table(long, tmp_path / "long.parquet")
    import_trace(
        "topk-parquet", tmp_path / "long.parquet", tmp_path / "u.parquet", MODEL, chunk_tokens=2
    )
    assert np.array_equal(read_trace(tmp_path / "u.parquet").experts, experts)
    export_trace("topk-parquet", tmp_path / "t.parquet", tmp_path / "w.parquet")
    back = pq.read_table(tmp_path / "w.parquet")
    assert np.array_equal(np.array(back["topk_indices"].to_pylist()), experts)
    pq.write_table(
        pa.table(
            {
                "layer": np.tile([1, 2, 3], 2)[:5],
                "expert_indices": experts.reshape(21, 4)[:5].tolist(),
            }
        ),
        tmp_path / "cut.parquet",
    )
    with pytest.raises(InputError, match="trailing rows do not form a whole token"):
        import_trace("topk-parquet", tmp_path / "cut.parquet", tmp_path / "x.parquet", MODEL)
