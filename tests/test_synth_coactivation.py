"""Co-activation of synthetic traces: routing modes keep the marginals, are recovered by the fit,
reproduce ESFT's pairwise statistics (stated constants, and held out on the real data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from traces import expert_counts
from traces.coactivation import (
    PairStats,
    distinct_blocks,
    lift_quantiles,
    lift_rank_correlation,
    packed_blocks,
    top_pair_overlap,
)
from traces.importers.esft import iter_esft
from traces.io import concat_traces
from traces.model import ModelSpec, model_preset
from traces.synthetic import ModeTable, SynthConfig, fit_modes, generate_trace
from traces.synthetic.config import FIT_DEFAULT_MODES
from traces.synthetic.popularity import ESFT_LIFT_QUANTILES, ESFT_PACKED_OVER_CONTIGUOUS
from traces.trace import RoutingTrace, TraceMeta

TOY = ModelSpec("toy", (1, 2), 16, 0, 2, 64)


def _planted() -> ModeTable:
    """Two equally likely modes per layer: experts 0-7 only, or experts 8-15 only.

    Each mode spreads top-2 = 2 activations evenly over its 8 experts (0.25 each), so the
    layer activation is 0.125 per expert.  A token of a mode takes one of its 28 pairs, so the
    mean pair inside a half has P(i, j) = 1/2 x 1/28 and lift P(i, j) / (P(i) P(j)) =
    (1/56) / (1/8)^2 = 64/56 = 1.14; pairs across halves never occur (lift 0).
    """
    act = np.zeros((2, 2, 16))
    act[:, 0, :8] = 0.25
    act[:, 1, 8:] = 0.25
    return ModeTable(TOY, np.full((2, 2), 0.5), act, source="planted")


def test_planted_modes_give_the_hand_computed_lift_and_exact_marginals():
    tr = generate_trace(SynthConfig(TOY, num_tokens=40_000, fit=_planted(), seed=1))
    st = PairStats.of(tr.experts, 16)
    lift, _ = st.lift()
    within = lift[:, :8, :8][:, np.triu_indices(8, 1)[0], np.triu_indices(8, 1)[1]]
    across = lift[:, :8, 8:]
    assert across.max() == 0.0  # a token never mixes the halves
    # within a half: 64/56 = 1.143; 28 pairs x ~714 tokens each, sampling error ~4 %
    assert abs(within.mean() - 64 / 56) < 0.03
    counts = expert_counts([tr])
    # marginals: 0.125 x 40,000 = 5,000 routes per expert, sd ~ sqrt(5000 x 0.875) = 66
    assert np.abs(counts - 5000).max() < 5 * 66


def test_fit_recovers_planted_modes():
    tr = generate_trace(SynthConfig(TOY, num_tokens=20_000, fit=_planted(), seed=2))
    fit = fit_modes([tr], tr.num_tokens, num_modes=2, seed=0)
    for li in range(2):
        act = fit.activation[li]
        # each fitted mode lives on one half (up to the order of the modes)
        halves = sorted(int(a[:8].sum() > a[8:].sum()) for a in act)
        assert halves == [0, 1]
        np.testing.assert_allclose(np.sort(act.max(axis=1)), [0.25, 0.25], atol=0.02)
        np.testing.assert_allclose(fit.weights[li], [0.5, 0.5], atol=0.02)
    np.testing.assert_allclose(fit.marginals().sum(axis=1), 2.0)


def test_modes_leave_the_marginals_exact():
    """Parametric modes and layer correlation together: counts still match the target."""
    from traces.synthetic import tenant_activation

    m = model_preset("deepseek-v2-lite")
    cfg = SynthConfig(m, num_tokens=20_000, seed=5, layer_corr=0.3)
    pi = tenant_activation(cfg)[0]
    counts = expert_counts([generate_trace(cfg)]).astype(float)
    live = pi > 0
    exp = 20_000 * pi[live]
    chi = float((((counts[live] - exp) ** 2) / (exp * (1 - pi[live]))).mean())
    # Pearson statistic per cell of 26 x 64 Binomial counts: 1 +- ~0.04 when marginals are
    # exact; correlated draws (modes, layer copies) do not change the per-cell variance much
    assert 0.8 < chi < 1.25


def _lift_stats(experts: np.ndarray, num_experts: int = 64) -> tuple[np.ndarray, float]:
    st = PairStats.of(experts, num_experts)
    L = experts.shape[1]
    contiguous = np.tile(np.arange(num_experts) * 8 // num_experts, (L, 1))
    ratio = distinct_blocks(experts, packed_blocks(st, 8)) / distinct_blocks(experts, contiguous)
    return lift_quantiles(st), ratio


def test_v2_lite_preset_reproduces_the_stated_esft_coactivation():
    m = model_preset("deepseek-v2-lite")
    tr = generate_trace(SynthConfig(m, num_tokens=8192, seed=3))
    q, ratio = _lift_stats(tr.experts[:, :8])
    # tolerance: 0.06 on each lift quantile (the four ESFT tasks differ from the pooled value
    # by up to 0.08), 0.05 on the packed/contiguous ratio of distinct blocks (tasks: 0.61-0.70)
    np.testing.assert_allclose(q, ESFT_LIFT_QUANTILES, atol=0.06)
    assert abs(ratio - ESFT_PACKED_OVER_CONTIGUOUS) < 0.05
    plain = generate_trace(SynthConfig(m, num_tokens=8192, seed=3, modes=1))
    q_plain, ratio_plain = _lift_stats(plain.experts[:, :8])
    assert q_plain[2] > 0.7 and ratio_plain > 0.75, (q_plain, ratio_plain)  # without modes: far off


def _first_layers(tr: RoutingTrace, layers: int) -> RoutingTrace:
    m = tr.model
    sub = replace(m, moe_layer_indices=m.moe_layer_indices[:layers])
    return RoutingTrace(TraceMeta(sub, tr.meta.source), tr.experts[:, :layers].copy(),
                        tr.seq_id, tr.position)


@pytest.mark.parametrize("task", ["intent", "translation"])
def test_fitted_trace_reproduces_real_coactivation_held_out(esft_dir, task):
    real = _first_layers(concat_traces(list(iter_esft(esft_dir / task))), 6)
    seqs = np.unique(real.seq_id)
    fit_rows = np.isin(real.seq_id, seqs[::2])
    a = real.take(np.flatnonzero(fit_rows))
    b = real.take(np.flatnonzero(~fit_rows))  # held out: sequences the fit never saw
    table = fit_modes([a], a.num_tokens, num_modes=FIT_DEFAULT_MODES, seed=0, source=task)
    synth = generate_trace(SynthConfig(a.model, num_tokens=b.num_tokens, fit=table, seed=1))
    sa, sb, ss = (PairStats.of(t.experts, 64) for t in (a, b, synth))
    # Stated tolerances (measured on ESFT: 64 modes, 6 layers, about 4k tokens each side):
    # lift quantiles within 0.15 of the held-out real ones at 25-75 %, 0.2 at 10 % and 0.3 at
    # 90 %; pair-by-pair rank correlation >= 0.85 (real fit half vs held-out half: 0.95-0.97);
    # top-50 pair overlap >= 0.7 (real halves: 0.84-0.92); distinct blocks per token within
    # 1 % for contiguous blocks and 8 % for blocks packed by the fit half's co-activation.
    gap = np.abs(lift_quantiles(ss) - lift_quantiles(sb))
    assert np.all(gap <= [0.2, 0.15, 0.15, 0.15, 0.3]), gap
    assert lift_rank_correlation(ss, sb) >= 0.85
    assert top_pair_overlap(ss, sb) >= 0.7
    contiguous = np.tile(np.arange(64) // 8, (6, 1))
    packed = packed_blocks(sa, 8)
    for blocks, tol in ((contiguous, 0.01), (packed, 0.08)):
        real_d, synth_d = distinct_blocks(b.experts, blocks), distinct_blocks(synth.experts, blocks)
        assert abs(synth_d / real_d - 1) < tol
    # the same statistics without co-activation are far off (the test can fail)
    flat = generate_trace(SynthConfig(a.model, num_tokens=b.num_tokens, seed=1, modes=1,
                                      fit=replace(table, weights=np.ones((6, 1)),
                                                  activation=table.marginals()[:, None, :])))
    assert lift_rank_correlation(PairStats.of(flat.experts, 64), sb) < 0.3
