"""``moe-netsim trace synth`` end to end: the file, tenants, fitted statistics, bad input."""

from __future__ import annotations

import json

import numpy as np

from experiments.cli import main
from traces import expert_counts, read_trace, read_trace_meta
from traces.model import model_preset
from traces.synthetic import SynthConfig, generate_trace


def test_synth_writes_the_native_format(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    args = ["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "3000", "--out",
            str(out), "--seed", "9", "--gpus", "8", "--seq-len", "100", "--chunk-tokens", "1000",
            "--tenant", "name=chat:share=3:gpus=0-5", "--tenant", "name=code:share=1:gpus=6,7",
            "--token-corr", "0.2", "--layer-corr", "0.2"]
    assert main(args) == 0
    assert "3000 tokens" in capsys.readouterr().out
    tr = read_trace(out)
    meta, n = read_trace_meta(out)
    assert n == 3000 and meta.source == "synthetic"
    tenants = meta.extra["synthetic"]["tenants"]
    assert [t["name"] for t in tenants] == ["chat", "code"] and tenants[1]["gpus"] == [6, 7]
    # the command streams exactly what the library generates
    from experiments.commands.trace_synth import parse_tenant

    m = model_preset("deepseek-v2-lite")
    cfg = SynthConfig(m, num_tokens=3000, seed=9, num_gpus=8, seq_len=100, token_corr=0.2,
                      layer_corr=0.2, tenants=(parse_tenant("name=chat:share=3:gpus=0-5", m),
                                               parse_tenant("name=code:share=1:gpus=6,7", m)))
    np.testing.assert_array_equal(tr.experts, generate_trace(cfg).experts)
    np.testing.assert_array_equal(tr.origin_gpu, generate_trace(cfg).origin_gpu)
    assert main(args) == 2  # refuses to overwrite
    assert main([*args, "--overwrite"]) == 0


def test_synth_fits_sglang_style_counts(tmp_path):
    # an SGLang logical_count file for DeepSeek-R1 geometry: 61 layers (0-2 dense) x 256
    rng = np.random.default_rng(0)
    rows = np.zeros((61, 256))
    rows[3:] = rng.gamma(1.0, 1.0, size=(58, 256)) * 1000
    stats = tmp_path / "counts.json"
    stats.write_text(json.dumps({"logical_count": rows.tolist()}))
    out = tmp_path / "fit.parquet"
    assert main(["trace", "synth", "--model", "deepseek-r1", "--tokens", "8000", "--out",
                 str(out), "--load-stats", str(stats)]) == 0
    tr = read_trace(out)
    p = rows[3:] / rows[3:].sum(1, keepdims=True) * 8
    freq = expert_counts([tr]) / tr.num_tokens
    z = (freq - p) / np.sqrt(p * (1 - p) / tr.num_tokens)
    assert 0.9 < (z**2).mean() < 1.1  # 14,848 cells of unit-mean terms


def test_synth_bad_input_exit_2(tmp_path, capsys):
    out = tmp_path / "x.parquet"
    base = ["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "100", "--out", str(out)]
    assert main([*base, "--tenant", "share=1:colour=red"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main([*base, "--tenant", "gpus=0-99"]) == 2
    assert "GPU 99 out of range" in capsys.readouterr().err
    assert main([*base, "--model", "nope"]) == 2
    assert main([*base, "--load-stats", str(tmp_path / "missing.json")]) == 2
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
