"""Origin models (traces.origin_models) and their assignment (traces.origins): hand-computed
cases, streaming, bad input, docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import SynthConfig, generate_trace, model_preset
from traces.infra.errors import InputError
from traces.origin_models import ORIGIN_MODELS, parse_origins
from traces.origins import (
    OriginAssigner,
    apply_origins,
    coverage_warning,
    tenant_server_sets,
    with_origins,
)

MODEL = model_preset("deepseek-moe-16b")
GPU_SERVER = np.repeat(np.arange(3), 2)  # 3 servers of 2 GPUs: GPUs 0-1, 2-3, 4-5


def _trace(n: int = 12, seq_len: int = 4):
    return generate_trace(SynthConfig(MODEL, num_tokens=n, seq_len=seq_len, num_gpus=6))


def test_models_hand_computed():
    t = _trace()  # 12 tokens, sequences 0,0,0,0,1,1,1,1,2,2,2,2; positions 0..3 each
    # dp: token i on GPU i mod 6
    assert apply_origins(t, parse_origins("dp"), GPU_SERVER).origin_gpu.tolist() == [
        0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]
    # seq: seq_id mod 6
    assert apply_origins(t, parse_origins("seq"), GPU_SERVER).origin_gpu.tolist() == [
        0] * 4 + [1] * 4 + [2] * 4
    # tenants 0 -> server 0 (GPUs 0, 1), 1 -> server 2 (GPUs 4, 5): seq 0, 2 are tenant 0,
    # seq 1 tenant 1; tenant 0's 8 tokens alternate 0, 1; tenant 1's 4 tokens 4, 5, 4, 5
    got = apply_origins(t, parse_origins("tenants:0/2"), GPU_SERVER).origin_gpu.tolist()
    assert got == [0, 1, 0, 1, 4, 5, 4, 5, 0, 1, 0, 1]
    # pd: positions 0-1 prefill on server 0, positions 2-3 decode on servers 1-2 (GPUs 2..5)
    got = apply_origins(t, parse_origins("pd:0/1-2/2"), GPU_SERVER).origin_gpu.tolist()
    assert got == [0, 1, 2, 3, 0, 1, 4, 5, 0, 1, 2, 3]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=5),
       st.sampled_from(["dp", "seq", "tenants:0-1/2", "pd:2/0-1/1"]))
def test_streamed_blocks_get_the_origins_of_the_whole_trace(cuts, text):
    t = _trace(24, 3)
    bounds = np.minimum(np.cumsum([0, *cuts, 24]), 24)
    blocks = [t.take(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    model = parse_origins(text)
    streamed = np.concatenate([b.origin_gpu for b in with_origins(
        blocks, OriginAssigner(model, GPU_SERVER))])
    assert streamed.tolist() == apply_origins(t, model, GPU_SERVER).origin_gpu.tolist()


@given(st.sampled_from(["dp", "seq", "recorded", "tenants:0-3,5/4", "pd:0-1/2-3/16",
                        "tenants:7"]))
def test_text_round_trips(text):
    m = parse_origins(text)
    assert parse_origins(m.text) == m


def test_dp_balances_and_recorded_requires_origins():
    t = _trace(60, 60)  # one sequence: seq would put everything on GPU 0
    o = apply_origins(t, parse_origins("dp"), GPU_SERVER).origin_gpu
    assert np.bincount(o).tolist() == [10] * 6
    bare = t.__class__(t.meta, t.experts, t.seq_id, t.position)
    assert apply_origins(bare, None, GPU_SERVER).origin_gpu.tolist() == o.tolist()  # default dp
    with pytest.raises(InputError, match="records no origin_gpu"):
        apply_origins(bare, parse_origins("recorded"), GPU_SERVER)


@pytest.mark.parametrize("text, match", [
    ("zipf", "unknown origin model 'zipf'; known: dp, seq, recorded, tenants, pd"),
    ("tenants", "tenants needs arguments"),
    ("dp:3", "dp takes no arguments"),
    ("tenants:0-x", "must list ids and ranges"),
    ("tenants:3-1", "empty or negative"),
    ("pd:0-2/2-3/8", "overlap \\(server 2\\)"),
    ("pd:0/1", "expected pd:PREFILL/DECODE/PROMPT_TOKENS"),
    ("pd:0/1/x", "PROMPT_TOKENS must be an integer"),
])
def test_bad_model_text(text, match):
    with pytest.raises(InputError, match=match):
        parse_origins(text)


def test_server_outside_the_cluster():
    with pytest.raises(InputError, match="server 3 is outside the cluster's servers 0..2"):
        OriginAssigner(parse_origins("tenants:0/3"), GPU_SERVER)


def test_coverage_warning():
    assert coverage_warning(3, 6) is None  # half: no warning
    assert "cover 2 of the cluster's 6 GPUs" in coverage_warning(2, 6)
    a = OriginAssigner(parse_origins("tenants:0"), GPU_SERVER)
    a(_trace())
    assert "cover 2 of" in a.warning()


def test_tenant_server_sets():
    assert tenant_server_sets(6, 3) == ((0, 1), (2, 3), (4, 5))
    assert tenant_server_sets(32, 4)[3] == tuple(range(24, 32))
    with pytest.raises(InputError):
        tenant_server_sets(2, 3)


def test_every_model_is_documented():
    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "origins.md").read_text()
    for name, (syntax, _) in ORIGIN_MODELS.items():
        assert f"`{name}{':' + syntax if syntax else ''}`" in page, name
