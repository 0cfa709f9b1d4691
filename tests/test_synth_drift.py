"""Time-varying workloads: drift phases (abrupt and ramped), tenant shares over steps, and
concatenation of traces one after another."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.cli import main
from traces import expert_counts, read_trace
from traces.concat import concat_trace_files
from traces.infra.errors import InputError
from traces.io import write_trace
from traces.model import model_preset
from traces.synthetic import SynthConfig, generate_trace, tenant_activation
from traces.synthetic.popularity import phase_relabel
from traces.trace import RoutingTrace

V2 = model_preset("deepseek-v2-lite")


def _phase_targets(cfg: SynthConfig) -> list[np.ndarray]:
    pi = tenant_activation(cfg)[0]
    out = []
    for ph in range(len(cfg.phase_steps) + 1):
        perm = phase_relabel(cfg.model, cfg.seed, 0, ph)
        p = np.empty_like(pi)
        p[np.arange(pi.shape[0])[:, None], perm] = pi
        out.append(p)
    return out


def _window_activation(tr: RoutingTrace, steps: np.ndarray) -> np.ndarray:
    sel = np.isin(tr.step, steps)
    return expert_counts([tr.take(np.flatnonzero(sel))]) / sel.sum()


def _blend(act: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Least-squares f in act ~ (1 - f) a + f b over all layers and experts."""
    d = (b - a).ravel()
    return float(d @ (act - a).ravel() / (d @ d))


def test_abrupt_phase_change_switches_popularity_at_its_step():
    cfg = SynthConfig(V2, num_tokens=16_000, step_tokens=2000, phase_steps=(4,), seed=3, modes=1)
    tr = generate_trace(cfg)
    pi0, pi1 = _phase_targets(cfg)
    assert np.abs(pi0 - pi1).sum() > 2  # the phases differ (relabelled experts)
    before, after = _window_activation(tr, np.arange(4)), _window_activation(tr, np.arange(4, 8))
    # 8,000 tokens per window: each activation estimate has sd <= sqrt(0.25 / 8000) = 0.0056
    assert np.abs(before - pi0).max() < 0.03 and np.abs(after - pi1).max() < 0.03
    assert abs(_blend(before, pi0, pi1)) < 0.02 and abs(_blend(after, pi0, pi1) - 1) < 0.02


def test_ramped_phase_change_blends_linearly_over_its_ramp():
    cfg = SynthConfig(V2, num_tokens=20_000, step_tokens=2000, phase_steps=(2,),
                      drift_ramp_steps=4, seed=4)
    tr = generate_trace(cfg)
    pi0, pi1 = _phase_targets(cfg)
    for s in range(10):
        want = min(max((s - 2) / 4, 0.0), 1.0)  # 0, 0, 0, .25, .5, .75, 1, 1, 1, 1
        got = _blend(_window_activation(tr, np.array([s])), pi0, pi1)
        assert abs(got - want) < 0.05, (s, got, want)  # 2,000 tokens per step


def test_gradual_drift_moves_every_window(tmp_path):
    out = tmp_path / "d.parquet"
    assert main(["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "12000",
                 "--step-tokens", "1000", "--drift-every", "3", "--out", str(out)]) == 0
    tr = read_trace(out)
    meta = tr.meta.extra["synthetic"]
    assert meta["phase_steps"] == [3, 6, 9] and meta["drift_ramp_steps"] == 3
    acts = [_window_activation(tr, np.arange(s, s + 3)) for s in range(0, 12, 3)]
    moves = [np.abs(b - a).sum(axis=1).mean() for a, b in zip(acts, acts[1:], strict=False)]
    # consecutive 3-step windows differ by far more than sampling noise (~0.35 of 6 per layer)
    assert min(moves) > 1.0, moves


def test_tenant_shares_follow_their_schedule():
    from traces.synthetic import TenantSpec

    cfg = SynthConfig(V2, num_tokens=40_000, seq_len=10, step_tokens=4000, num_gpus=2, seed=1,
                      tenants=(TenantSpec(1.0, gpus=(0,), name="a", share_end=3.0),
                               TenantSpec(3.0, gpus=(1,), name="b", share_end=1.0)))
    tr = generate_trace(cfg)
    for s in range(10):
        share_a = float((tr.origin_gpu[tr.step == s] == 0).mean())
        a = 1 + 2 * s / 9  # linear 1 -> 3 over steps 0..9
        b = 3 - 2 * s / 9
        # 400 sequences per step: sd of the share <= 0.025
        assert abs(share_a - a / (a + b)) < 0.1, (s, share_a)


def _synth(tmp_path, name, **kw) -> RoutingTrace:
    tr = generate_trace(SynthConfig(V2, num_tokens=kw.pop("n", 3000), step_tokens=500, **kw))
    write_trace(tmp_path / name, tr)
    return tr


def test_concat_keeps_every_token_and_continues_steps(tmp_path):
    a = _synth(tmp_path, "a.parquet", seed=1, seq_len=100)
    b = _synth(tmp_path, "b.parquet", seed=2, seq_len=64, n=2000)
    n = concat_trace_files([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "c.parquet")
    c = read_trace(tmp_path / "c.parquet")
    assert n == c.num_tokens == 5000
    np.testing.assert_array_equal(c.experts, np.concatenate([a.experts, b.experts]))
    np.testing.assert_array_equal(c.origin_gpu, np.concatenate([a.origin_gpu, b.origin_gpu]))
    assert np.all(np.diff(c.step) >= 0)
    # a: steps 0..5 (3000 / 500); b starts at 6: steps 6..9
    assert c.step[3000] == 6 and c.step[-1] == 9
    # a: sequences 0..29; b's 0..31 become 30..61
    assert c.seq_id[3000] == 30 and len(np.unique(c.seq_id)) == 30 + 32


def test_concat_without_steps_needs_the_sequence_rule(tmp_path):
    t = generate_trace(SynthConfig(V2, num_tokens=300, seq_len=100))
    bare = RoutingTrace(t.meta, t.experts, t.seq_id, t.position, t.origin_gpu)
    write_trace(tmp_path / "x.parquet", bare)
    write_trace(tmp_path / "y.parquet", bare)
    ins = [tmp_path / "x.parquet", tmp_path / "y.parquet"]
    with pytest.raises(InputError, match="--missing-steps sequence"):
        concat_trace_files(ins, tmp_path / "z.parquet")
    assert not (tmp_path / "z.parquet").exists()
    concat_trace_files(ins, tmp_path / "z.parquet", missing_steps="sequence")
    z = read_trace(tmp_path / "z.parquet")
    # 3 sequences per input, one step each: 0, 1, 2, then 3, 4, 5
    np.testing.assert_array_equal(np.unique(z.step), np.arange(6))
    assert np.all(np.diff(z.step) >= 0)


def test_concat_bad_input_exit_2_and_writes_nothing(tmp_path, capsys):
    _synth(tmp_path, "a.parquet", seed=1)
    r1 = generate_trace(SynthConfig(model_preset("deepseek-moe-16b"), num_tokens=100))
    write_trace(tmp_path / "r.parquet", r1)
    a, r, out = (str(tmp_path / f) for f in ("a.parquet", "r.parquet", "o.parquet"))
    assert main(["trace", "concat", a, r, "--out", out]) == 2
    assert "differs" in capsys.readouterr().err
    assert main(["trace", "concat", a, a, "--out", a, "--overwrite"]) == 2
    assert "never writes to, replaces or deletes its inputs" in capsys.readouterr().err
    assert main(["trace", "concat", a, "--out", out]) == 2
    assert not (tmp_path / "o.parquet").exists()


def test_drift_bad_input_is_one_line():
    with pytest.raises(InputError, match="closer than the drift ramp"):
        SynthConfig(V2, 10_000, step_tokens=100, phase_steps=(5, 8), drift_ramp_steps=4)
    with pytest.raises(InputError, match="after the last step"):
        generate_trace(SynthConfig(V2, 1000, step_tokens=100, phase_steps=(50,)))
    with pytest.raises(InputError, match="increasing steps"):
        SynthConfig(V2, 1000, phase_steps=(0,))
