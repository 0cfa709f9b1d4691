"""The synthetic generator: exact marginals, group limits, correlation, tenants, chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import expert_counts, model_preset
from traces.infra.errors import InputError
from traces.load_stats import LoadStats, read_sglang_logical_count
from traces.model import ModelSpec
from traces.synthetic import (
    SynthConfig,
    TenantSpec,
    build_designs,
    generate_trace,
    iter_synthetic,
    layer_popularity,
    tenant_activation,
)


def _chi2_per_dof(counts: np.ndarray, pi: np.ndarray, tokens: int) -> float:
    """Pearson statistic of per-(layer, expert) counts over its expectation, per cell.

    Tokens are independent and each routes to expert i with probability pi[i], so a count is
    Binomial(tokens, pi): (count - tokens pi)^2 / (tokens pi (1 - pi)) has mean 1 per cell.
    """
    live = pi > 0
    exp = tokens * pi[live]
    return float((((counts[live] - exp) ** 2) / (exp * (1 - pi[live]))).mean())


def test_default_skew_looks_like_deepseek_r1():
    cfg = SynthConfig(model_preset("deepseek-r1"), num_tokens=1)
    pi = tenant_activation(cfg)[0]
    np.testing.assert_allclose(pi.sum(axis=1), 8)
    ratio = pi.max(axis=1) / pi.mean(axis=1)
    # SGLang's R1 statistics: busiest expert of a layer typically 5-8x the mean
    assert np.all((ratio > 5) & (ratio < 8))
    np.testing.assert_allclose(layer_popularity(cfg).sum(axis=1), 1)


def test_zipf_marginals_match_within_sampling_error():
    model = model_preset("deepseek-v2-lite")
    cfg = SynthConfig(model, num_tokens=20_000, seed=4, zipf_exponent=0.8)
    tr = generate_trace(cfg)
    pi = tenant_activation(cfg)[0]
    chi = _chi2_per_dof(expert_counts([tr]).astype(float), pi, tr.num_tokens)
    # 26 x 64 cells: the mean of ~1,664 unit-mean terms is 1 +- ~0.04
    assert 0.85 < chi < 1.15
    s = np.sort(tr.experts, axis=2)
    assert (s[:, :, 1:] != s[:, :, :-1]).all()


def test_fitted_marginals_match_real_sglang_statistics(sglang_dir):
    model = model_preset("deepseek-r1")
    stats = read_sglang_logical_count(sglang_dir / "prefill_in4096.json", model)
    cfg = SynthConfig(model, num_tokens=24_000, seed=1, load_stats=stats, layer_corr=0.3)
    tr = generate_trace(cfg)
    counts = expert_counts([tr]).astype(float)
    target = stats.activation()
    chi = _chi2_per_dof(counts, target, tr.num_tokens)
    assert 0.9 < chi < 1.1  # 58 x 256 cells
    # the busiest expert per layer carries what the real one does
    np.testing.assert_allclose(
        counts.max(axis=1) / tr.num_tokens, target.max(axis=1), rtol=0.1
    )
    groups = tr.experts.astype(int) // 32
    used = (np.sort(groups, axis=2)[:, :, 1:] != np.sort(groups, axis=2)[:, :, :-1]).sum(2) + 1
    assert used.max() <= 4


def test_fitted_marginals_match_hand_made_counts():
    # 2 layers x 8 experts, top-2: activation = counts / tokens * 2, rows summing to 2.
    model = ModelSpec("tiny", (1, 2), 8, 0, 2, 16)
    counts = np.array([[40, 20, 10, 10, 8, 6, 4, 2], [1, 1, 1, 1, 1, 1, 1, 93]], float)
    stats = LoadStats(model, counts, "hand-made")
    # layer 2: expert 7 has activation 93/100 * 2 = 1.86 > 1: impossible with 2 distinct experts
    with pytest.raises(InputError, match="MoE layer 2"):
        build_designs(SynthConfig(model, num_tokens=1, load_stats=stats))
    counts[1] = [10, 10, 10, 10, 10, 10, 10, 30]  # expert 7: 30/100 * 2 = 0.6
    stats = LoadStats(model, counts, "hand-made")
    tr = generate_trace(SynthConfig(model, num_tokens=30_000, seed=2, load_stats=stats))
    chi = _chi2_per_dof(expert_counts([tr]).astype(float), stats.activation(), tr.num_tokens)
    assert 0.3 < chi < 2.2  # only 16 cells: chi2(16)/16 lies in this band with p > 0.995
    freq = expert_counts([tr])[1] / tr.num_tokens
    assert abs(freq[7] - 0.6) < 0.02  # sd = sqrt(0.6 * 0.4 / 30000) = 0.0028


def test_output_does_not_depend_on_chunk_size():
    cfg = SynthConfig(
        model_preset("deepseek-v2-lite"),
        num_tokens=19_000,  # crosses two internal units of 8,192 tokens
        seq_len=700,
        num_gpus=16,
        token_corr=0.4,
        layer_corr=0.3,
        tenants=(TenantSpec(2.0, name="a"), TenantSpec(1.0, zipf_exponent=0.9, name="b")),
        seed=5,
    )
    whole = generate_trace(cfg)
    for chunk in (1000, 7777):
        parts = list(iter_synthetic(cfg, chunk_tokens=chunk))
        assert max(p.num_tokens for p in parts) <= chunk
        for name in ("experts", "seq_id", "position", "origin_gpu", "step"):
            got = np.concatenate([getattr(p, name) for p in parts])
            np.testing.assert_array_equal(got, getattr(whole, name), err_msg=name)


def test_token_correlation_repeats_the_previous_token():
    model = model_preset("deepseek-v2-lite")
    tr = generate_trace(SynthConfig(model, num_tokens=12_000, seq_len=100, token_corr=0.6))
    same = (tr.experts[1:] == tr.experts[:-1]).all(axis=2)  # [tokens - 1, layers]
    cont = tr.position[1:] > 0
    rate = same[cont].mean()
    # 0.6 by copying, plus a fresh draw repeating the same 6 experts in the same order (~0)
    assert abs(rate - 0.6) < 0.02
    assert same[~cont].mean() < 0.01  # never across sequence boundaries


def test_layer_correlation_maps_the_previous_layer():
    model = model_preset("deepseek-r1")
    cfg = SynthConfig(model, num_tokens=6000, layer_corr=0.5, seed=3)
    d = build_designs(cfg)[0]
    # lowered only where a layer's profile cannot absorb the previous one's (recorded)
    assert d.layer_corr[0] == 0 and np.all(d.layer_corr[1:] <= 0.5)
    assert d.layer_corr[1:].mean() > 0.4
    tr = generate_trace(cfg)
    mapped = d.sigma[np.arange(1, 58)[None, :, None], tr.experts[:, :-1].astype(np.intp)]
    rate = (np.sort(mapped, axis=2) == np.sort(tr.experts[:, 1:], axis=2)).all(axis=2).mean(0)
    # per layer: copies plus fresh draws that happen to equal the mapped set (~0); sd ~0.0065
    np.testing.assert_allclose(rate, d.layer_corr[1:], atol=0.03)
    # marginals still match per layer
    chi = _chi2_per_dof(expert_counts([tr]).astype(float), tenant_activation(cfg)[0], 6000)
    assert 0.9 < chi < 1.1


def test_tenants_use_their_gpus_and_their_own_popularity():
    model = model_preset("deepseek-v2-lite")
    cfg = SynthConfig(
        model,
        num_tokens=16_000,
        seq_len=64,
        num_gpus=8,
        tenants=(TenantSpec(3.0, name="chat"), TenantSpec(1.0, gpus=(6, 7), name="code")),
        seed=7,
    )
    tr = generate_trace(cfg)
    pis = tenant_activation(cfg)
    assert not np.allclose(pis[0], pis[1])  # different hot experts
    code = np.isin(tr.origin_gpu, [6, 7])
    # the first tenant gets the first 3/4 of the GPUs (0..5 after rounding), the second 6, 7
    assert set(np.unique(tr.origin_gpu[~code])) <= set(range(6))
    assert 0.2 < code.mean() < 0.3  # share 1/4 of sequences
    for mask, pi in ((~code, pis[0]), (code, pis[1])):
        sub = tr.take(np.flatnonzero(mask))
        chi = _chi2_per_dof(expert_counts([sub]).astype(float), pi, sub.num_tokens)
        assert 0.8 < chi < 1.2
    # every sequence keeps one tenant
    seqs = {}
    for s, c in zip(tr.seq_id, code, strict=True):
        assert seqs.setdefault(int(s), bool(c)) == bool(c)


@settings(max_examples=15, deadline=None)
@given(
    groups=st.sampled_from([(1, 1), (4, 2), (8, 4), (8, 3)]),
    per_group=st.integers(2, 8),
    top_k=st.integers(1, 6),
    exponent=st.floats(0.0, 1.2),
    seed=st.integers(0, 2**31),
)
def test_rows_are_valid_for_random_geometries(groups, per_group, top_k, exponent, seed):
    g, gk = groups
    experts = g * per_group
    top_k = min(top_k, gk * per_group - 1) if gk * per_group > 1 else 1
    model = ModelSpec("g", (0, 1, 2), experts, 0, top_k, 8, g, gk)
    try:
        tr = generate_trace(
            SynthConfig(model, num_tokens=300, zipf_exponent=exponent, seed=seed, layer_corr=0.5,
                         token_corr=0.3, max_activation=0.9)
        )
    except InputError as exc:  # a too concentrated load is refused, never mis-sampled
        assert "too concentrated" in str(exc)
        return
    s = np.sort(tr.experts, axis=2)
    assert (s[:, :, 1:] != s[:, :, :-1]).all()
    used = (np.diff(s // per_group, axis=2) != 0).sum(axis=2) + 1
    assert used.max() <= gk


def test_bad_configurations_are_input_errors():
    m = model_preset("deepseek-v2-lite")
    with pytest.raises(InputError, match="token_corr"):
        SynthConfig(m, num_tokens=10, token_corr=1.0)
    with pytest.raises(InputError, match="GPU 9 out of range"):
        SynthConfig(m, num_tokens=10, num_gpus=4, tenants=(TenantSpec(1.0, gpus=(9,)),))
    with pytest.raises(InputError, match="share"):
        TenantSpec(0.0)
    other = model_preset("deepseek-r1")
    stats = LoadStats(other, np.ones((58, 256)), "r1.json")
    with pytest.raises(InputError, match="r1.json.*geometry differs"):
        SynthConfig(m, num_tokens=10, load_stats=stats)
