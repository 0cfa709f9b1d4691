"""The native trace format: exact round trip, streaming, metadata, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import (
    ModelSpec,
    RoutingTrace,
    SynthConfig,
    TraceMeta,
    TraceWriter,
    generate_trace,
    iter_synthetic,
    iter_trace,
    model_preset,
    read_trace,
    read_trace_meta,
    write_trace,
)
from traces.infra.errors import InputError
from traces.io import write_blocks
from traces.model import load_model_spec


def _synth(tokens=3000, preset="deepseek-v2-lite", seed=3):
    return generate_trace(SynthConfig(model_preset(preset), num_tokens=tokens, seed=seed))


def test_round_trip_exact(tmp_path):
    tr = _synth()
    p = write_trace(tmp_path / "t.parquet", tr, row_group_tokens=1000)
    back = read_trace(p)
    np.testing.assert_array_equal(back.experts, tr.experts)
    assert back.experts.dtype == np.uint8
    for name in ("seq_id", "position", "origin_gpu", "step"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    meta, n = read_trace_meta(p)
    assert n == 3000 and meta == tr.meta


def test_streaming_in_chunks(tmp_path):
    cfg = SynthConfig(model_preset("deepseek-r1"), num_tokens=2000, seed=1)
    with TraceWriter(tmp_path / "s.parquet", next(iter_synthetic(cfg, 10)).meta) as w:
        for block in iter_synthetic(cfg, chunk_tokens=1500):
            w.write(block)
    sizes = [b.num_tokens for b in iter_trace(tmp_path / "s.parquet", chunk_tokens=700)]
    assert sum(sizes) == 2000 and max(sizes) <= 700
    whole = generate_trace(cfg)
    np.testing.assert_array_equal(read_trace(tmp_path / "s.parquet").experts, whole.experts)


def test_synthetic_is_seeded_and_valid():
    a, b, c = _synth(seed=1), _synth(seed=1), _synth(seed=2)
    np.testing.assert_array_equal(a.experts, b.experts)
    assert not np.array_equal(a.experts, c.experts)
    s = np.sort(a.experts, axis=2)
    assert (s[:, :, 1:] != s[:, :, :-1]).all()


def test_group_limited_routing_uses_at_most_four_groups():
    tr = generate_trace(SynthConfig(model_preset("deepseek-v3"), num_tokens=200, seed=0))
    groups = tr.experts // 32
    used = np.array([[len(set(row)) for row in tok] for tok in groups])
    assert used.max() <= 4


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_trace(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet"):
        read_trace(junk)
    good = write_trace(tmp_path / "g.parquet", _synth(500))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(InputError):
        read_trace(cut)


def test_failed_write_leaves_nothing(tmp_path):
    tr = _synth(100)
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with TraceWriter(target, tr.meta) as w:
            w.write(tr)
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ round-trip properties, gates

@st.composite
def traces_(draw):
    experts = draw(st.sampled_from([3, 64, 256, 300, 70000 % 65535]))
    k = draw(st.integers(1, min(4, experts)))
    layers = draw(st.integers(1, 4))
    first = draw(st.integers(0, 3))
    model = ModelSpec("p", tuple(range(first, first + layers)), experts, 1, k, 32)
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.array(
        [[rng.choice(experts, k, replace=False) for _ in range(layers)] for _ in range(n)],
        dtype=np.int64,
    ).reshape(n, layers, k)
    opt = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return RoutingTrace(
        meta=TraceMeta(model, source="prop", produced_by="hypothesis", extra={"n": n}),
        experts=ids.astype(np.uint8 if experts <= 256 else np.uint16),
        seq_id=rng.integers(-5, 10**12, n),
        position=rng.integers(0, 2**31 - 1, n).astype(np.int32),
        origin_gpu=rng.integers(0, 1000, n).astype(np.int32) if opt[0] else None,
        step=rng.integers(0, 50, n).astype(np.int32) if opt[1] else None,
        gates=rng.random((n, layers, k)).astype(np.float32) if opt[2] else None,
    )


@settings(max_examples=40, deadline=None)
@given(tr=traces_(), row_group=st.integers(1, 17), chunk=st.integers(1, 23))
def test_round_trip_property(tmp_path_factory, tr, row_group, chunk):
    p = tmp_path_factory.mktemp("rt") / "t.parquet"
    if tr.num_tokens == 0:
        with pytest.raises(InputError, match="no tokens"):
            write_blocks(p, [])
        return
    write_trace(p, tr, row_group_tokens=row_group)
    blocks = list(iter_trace(p, chunk_tokens=chunk))
    assert max(b.num_tokens for b in blocks) <= chunk
    back = read_trace(p)
    assert back.meta == tr.meta and back.experts.dtype == tr.experts.dtype
    for name in ("experts", "seq_id", "position", "origin_gpu", "step", "gates"):
        a, b = getattr(back, name), getattr(tr, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b)  # exact, gates bit for bit (float32)


def test_writer_checks_blocks(tmp_path):
    tr = _synth(50)
    no_origin = RoutingTrace(tr.meta, tr.experts, tr.seq_id, tr.position)
    with pytest.raises(InputError, match="records origin_gpu but a block lacks it"):
        with TraceWriter(tmp_path / "w.parquet", tr.meta) as w:
            w.write(no_origin)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="gate weight is NaN"):
        RoutingTrace(tr.meta, tr.experts, tr.seq_id, tr.position,
                     gates=np.full(tr.experts.shape, np.nan, np.float32))


def test_custom_model_spec(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('{"name": "c", "moe_layer_indices": [2, 4], "num_routed_experts": 300,'
                 ' "num_shared_experts": 0, "top_k": 3, "hidden_size": 64}')
    m = load_model_spec(str(p))
    assert m.moe_layer_indices == (2, 4) and m.num_routed_experts == 300
    assert load_model_spec("deepseek-r1") == model_preset("deepseek-r1")
    p.write_text('{"name": "c", "moe_layer_indices": [2], "num_routed_experts": 8}')
    with pytest.raises(InputError, match="m.json: required key 'num_shared_experts' is missing"):
        load_model_spec(str(p))
    p.write_text('{"name": "c", "moe_layer_indices": [2], "num_routed_experts": 8,'
                 ' "num_shared_experts": 0, "top_k": 9, "hidden_size": 4}')
    with pytest.raises(InputError, match="top_k=9 must be in 1..num_routed_experts"):
        load_model_spec(str(p))
    with pytest.raises(InputError, match="unknown model preset"):
        load_model_spec("deepseek-v4")
