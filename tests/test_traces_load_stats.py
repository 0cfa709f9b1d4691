"""Load statistics: SGLang logical_count JSON, the project's Parquet file, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_trace

from experiments.cli import main
from traces import ModelSpec, model_preset
from traces.infra.errors import InputError
from traces.io import write_trace
from traces.load_stats import (
    LoadStats,
    load_load_stats,
    read_sglang_logical_count,
    save_load_stats,
)

TOY = ModelSpec("toy", (1, 2), 4, 0, 2, 16)  # transformer layer 0 dense, MoE layers 1 and 2


def _json(tmp_path, rows, name="c.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"logical_count": rows}))
    return p


def test_sglang_real_files(sglang_dir, tmp_path):
    r1 = model_preset("deepseek-r1")
    for f in sorted(sglang_dir.glob("*.json")):
        s = load_load_stats(f)
        assert s.model == r1 and s.counts.shape == (58, 256)
        raw = json.loads(f.read_text())["logical_count"]
        np.testing.assert_array_equal(s.counts, np.asarray(raw, dtype=float)[3:])
        tokens = s.counts.sum(axis=1) / 8  # a MoE row sums to tokens x 8
        assert tokens.min() > 0.9 * tokens.max()  # "slightly different row sums" at most
        np.testing.assert_allclose(s.activation().sum(axis=1), 8)
    s = load_load_stats(sglang_dir / "prefill_in1024.json")
    assert s.counts.sum(axis=1)[0] / 8 == 8_388_608  # README: 8,388,608 tokens per layer
    back = load_load_stats(save_load_stats(tmp_path / "ls.parquet", s))
    np.testing.assert_array_equal(back.counts, s.counts)
    assert back.model == s.model and back.source == s.source


def test_by_hand_and_round_trip(tmp_path):
    # layer 0 dense (zeros); layer 1: 3 tokens x top-2 = 6 routes; layer 2 likewise
    p = _json(tmp_path, [[0, 0, 0, 0], [3, 1, 2, 0], [0, 0, 3, 3]])
    s = read_sglang_logical_count(p, TOY)
    np.testing.assert_array_equal(s.counts, [[3, 1, 2, 0], [0, 0, 3, 3]])
    # p = counts / tokens (6 routes / top-2 = 3 tokens): [1, 1/3, 2/3, 0] and [0, 0, 1, 1]
    np.testing.assert_allclose(s.activation(), [[1, 1 / 3, 2 / 3, 0], [0, 0, 1, 1]])
    back = load_load_stats(save_load_stats(tmp_path / "s.parquet", s))
    np.testing.assert_array_equal(back.counts, s.counts)
    assert back.model == TOY
    with pytest.raises(InputError, match="not 'deepseek-r1'"):
        load_load_stats(tmp_path / "s.parquet", model_preset("deepseek-r1"))


def test_counts_from_a_trace(tmp_path):
    # tokens route (0,1),(0,2) at layer 1 and (3,2),(1,2) at layer 2
    tr = make_trace(TOY, np.array([[[0, 1], [3, 2]], [[0, 2], [1, 2]]]))
    s = load_load_stats(write_trace(tmp_path / "t.parquet", tr))
    np.testing.assert_array_equal(s.counts, [[2, 1, 1, 0], [0, 1, 2, 1]])


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ('{"counts": []}', "expected a JSON object with key 'logical_count'"),
        ('{"logical_count": []}', "must be a non-empty list"),
        ('{"logical_count": [[0,0,0,0],[1,1,1,1]]}', "has 2 layers but model 'toy' needs 3"),
        ('{"logical_count": [[0,0,0,0],[1,1,1],[1,1,1,1]]}', r"logical_count\[1\] has 3 entries"),
        ('{"logical_count": [[0,0,0,0],[1,-1,1,1],[1,1,1,1]]}',
         r"logical_count\[1\]\[1\] = -1; counts must be finite"),
        ('{"logical_count": [[0,0,0,0],[1,NaN,1,1],[1,1,1,1]]}', r"logical_count\[1\]\[1\] = nan"),
        ('{"logical_count": [[0,0,0,0],[1,"a",1,1],[1,1,1,1]]}', "holds non-numbers"),
        ('{"logical_count": [[5,0,0,0],[1,1,1,1],[1,1,1,1]]}', "layer 0 is not a MoE layer"),
        ('{"logical_count": [[0,0,0,0],[0,0,0,0],[0,0,0,0]]}', "every MoE layer has zero counts"),
    ],
)
def test_bad_json(tmp_path, content, match):
    p = tmp_path / "c.json"
    p.write_text(content)
    with pytest.raises(InputError, match=match):
        read_sglang_logical_count(p, TOY)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_load_stats(tmp_path / "none.json")
    with pytest.raises(InputError, match="matches no preset"):
        load_load_stats(_json(tmp_path, [[1, 2, 3]] * 5))
    junk = tmp_path / "j.parquet"
    junk.write_bytes(b"PAR1 nonsense")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_load_stats(junk)
    good = save_load_stats(tmp_path / "g.parquet", LoadStats(TOY, np.ones((2, 4))))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(InputError):
        load_load_stats(cut)
    with pytest.raises(InputError, match="has negative, NaN or infinite"):
        LoadStats(TOY, np.array([[1, 1, 1, np.nan], [1, 1, 1, 1]]))


def test_cli_import_sglang(tmp_path, capsys):
    src = _json(tmp_path, [[0, 0, 0, 0], [3, 1, 2, 0], [0, 0, 3, 3]])
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY.to_dict()))
    out = tmp_path / "ls.parquet"
    assert main(["trace", "import", "--format", "sglang", str(src), "--out", str(out),
                 "--model", str(spec)]) == 0
    assert "3 tokens per layer" in capsys.readouterr().out
    np.testing.assert_array_equal(load_load_stats(out).counts, [[3, 1, 2, 0], [0, 0, 3, 3]])
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["trace", "import", "--format", "sglang", str(bad), "--out",
                 str(tmp_path / "b.parquet"), "--model", str(spec)]) == 2
    assert "logical_count" in capsys.readouterr().err
    assert not (tmp_path / "b.parquet").exists()
