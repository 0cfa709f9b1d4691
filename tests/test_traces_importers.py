"""Importers (ESFT, vLLM, long table): real data, hand-made inputs, round trips, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.cli import main
from traces import ModelSpec, read_trace, read_trace_meta
from traces.importers import import_trace, iter_esft, iter_table, iter_vllm
from traces.importers import table as table_mod
from traces.infra.errors import InputError
from traces.model import deepseek_v2_lite

TOY = ModelSpec("toy", (1, 2, 3), 8, 0, 2, 16)  # 3 MoE layers (1..3), 8 experts, top-2

ESFT_TOKENS = {"intent": 8222, "law": 8327, "summary": 8479, "translation": 8251}
ESFT_SEQUENCES = {"intent": 127, "law": 33, "summary": 13, "translation": 40}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- ESFT


@pytest.mark.parametrize("task", sorted(ESFT_TOKENS))
def test_esft_real_token_counts(esft_dir, tmp_path, task):
    out = tmp_path / f"{task}.parquet"
    n = import_trace("esft", esft_dir / task, out)
    meta, rows = read_trace_meta(out)
    assert n == rows == ESFT_TOKENS[task]
    assert meta.model == deepseek_v2_lite()
    tr = read_trace(out)
    assert len(np.unique(tr.seq_id)) == ESFT_SEQUENCES[task]
    assert tr.gates is not None and tr.experts.shape == (n, 26, 6)
    # first sequence, MoE layer 1, first token: the first 6 ids and gates of the file
    line = (esft_dir / task / "expert_weights_1.txt").read_text().split("\n")[0]
    ids, gates = line.split("\t\t")
    np.testing.assert_array_equal(tr.experts[0, 0], [int(x) for x in ids.split("\t")[:6]])
    np.testing.assert_allclose(tr.gates[0, 0], [float(x) for x in gates.split("\t")[:6]])
    last = (esft_dir / task / "expert_weights_26.txt").read_text().rstrip("\n").split("\n")[-1]
    np.testing.assert_array_equal(tr.experts[-1, -1], [int(x) for x in
                                                       last.split("\t\t")[0].split("\t")[-6:]])


def _write_esft(folder: Path, lines_per_layer: dict[int, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for layer, lines in lines_per_layer.items():
        (folder / f"expert_weights_{layer}.txt").write_text("".join(x + "\n" for x in lines))
    return folder


def _esft_line(ids: list[int], gates: list[float] | None = None) -> str:
    s = "\t".join(str(i) for i in ids)
    if gates is not None:
        s += "\t\t" + "\t".join(f"{g:.4f}" for g in gates)
    return s


def _good_esft(tmp_path: Path) -> dict[int, list[str]]:
    # two sequences: 2 tokens then 1 token; top-2 of 8 experts; layers 1..3
    return {
        layer: [
            _esft_line([layer, 0, 5, 6], [0.5, 0.25, 0.125, 0.0625]),
            _esft_line([7, layer + 2], [0.3, 0.2]),
        ]
        for layer in (1, 2, 3)
    }


def test_esft_small_by_hand(tmp_path):
    folder = _write_esft(tmp_path / "task", _good_esft(tmp_path))
    blocks = list(iter_esft(folder, TOY, chunk_tokens=2))
    tr = blocks[0]
    assert [b.num_tokens for b in blocks] == [2, 1]  # a sequence is never split by the reader
    np.testing.assert_array_equal(tr.seq_id, [0, 0])
    np.testing.assert_array_equal(tr.position, [0, 1])
    np.testing.assert_array_equal(tr.experts[0], [[1, 0], [2, 0], [3, 0]])
    np.testing.assert_array_equal(tr.experts[1], [[5, 6]] * 3)
    np.testing.assert_array_equal(blocks[1].experts[0], [[7, 3], [7, 4], [7, 5]])
    np.testing.assert_allclose(tr.gates[1, 2], [0.125, 0.0625])


def _bad_esft_cases() -> list[tuple[str, dict[int, list[str]] | None, str]]:
    ok = [_esft_line([1, 2], [0.5, 0.25]), _esft_line([3, 4, 5, 6], [0.1, 0.1, 0.1, 0.1])]
    def with_layer(layer: int, lines: list[str]) -> dict[int, list[str]]:
        d = {la: list(ok) for la in (1, 2, 3)}
        d[layer] = lines
        return d
    return [
        ("missing layer", {1: ok, 2: ok}, "expert_weights_3.txt missing"),
        ("extra layer", {0: ok, 1: ok, 2: ok, 3: ok}, "layer 0 is not a MoE layer"),
        ("unequal lines", with_layer(2, ok[:1]), "has 1 lines but"),
        ("token count", with_layer(3, [ok[0], _esft_line([3, 4], [0.1, 0.1])]),
         "line 2 \\(MoE layer 3\\): 1 tokens, but expert_weights_1.txt has 2"),
        ("id range", with_layer(2, [_esft_line([1, 8], [0.5, 0.2]), ok[1]]),
         "line 1 \\(MoE layer 2\\): token 0: expert id 8 out of range 0..7"),
        ("duplicate", with_layer(1, [ok[0], _esft_line([3, 4, 6, 6], [0.1] * 4)]),
         "line 2 \\(MoE layer 1\\): token 1: the 2 routed expert ids are not distinct"),
        ("nan gate", with_layer(3, [ok[0], _esft_line([3, 4, 5, 6]) + "\t\t0.1\tnan\t0.1\t0.1"]),
         "line 2 .*gate nan is not a probability"),
        ("not a number", with_layer(1, ["1\tx\t\t0.5\t0.5", ok[1]]),
         "line 1 .*expert id field 2 is 'x'"),
        ("odd id count", with_layer(2, [ok[0], "3\t4\t5\t\t0.1\t0.1\t0.1"]),
         "3 expert ids is not a multiple of top_k=2"),
        ("gate count", with_layer(2, [ok[0], "3\t4\t5\t6\t\t0.1\t0.1"]),
         "2 gate probabilities for 4 expert ids"),
        ("gates vanish", with_layer(3, [ok[0], _esft_line([3, 4, 5, 6])]),
         "no gate probabilities, but earlier lines have them"),
        ("empty line", with_layer(1, ["", ok[1]]), "line 1 .*empty line"),
        ("empty files", {1: [], 2: [], 3: []}, "empty file"),
        ("no files", None, "no expert_weights_<L>.txt files"),
    ]


@pytest.mark.parametrize("name,layers,match", _bad_esft_cases(), ids=lambda x: str(x)[:14])
def test_esft_bad_input(tmp_path, name, layers, match):
    folder = tmp_path / "task"
    folder.mkdir()
    if layers is not None:
        _write_esft(folder, layers)
    out = tmp_path / "out" / "t.parquet"
    with pytest.raises(InputError, match=match) as exc:
        import_trace("esft", folder, out, TOY)
    assert "expert_weights" in str(exc.value) or "task" in str(exc.value)
    assert not out.exists() and (not out.parent.exists() or _leftovers(out.parent) == [])


def test_esft_parent_folder_hint(tmp_path):
    _write_esft(tmp_path / "root" / "intent", _good_esft(tmp_path))
    with pytest.raises(InputError, match="task folders intent: pass one of them"):
        list(iter_esft(tmp_path / "root", TOY))


# ---------------------------------------------------------------- vLLM


def _requests(seed: int, sizes: list[int], model: ModelSpec = TOY) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.stack([
            np.stack([rng.permutation(model.num_routed_experts)[: model.top_k]
                      for _ in range(model.num_moe_layers)])
            for _ in range(n)
        ]).astype(np.int16)
        for n in sizes
    ]


def test_vllm_npy_npz_and_folder(tmp_path):
    reqs = _requests(0, [3, 1, 4])
    folder = tmp_path / "reqs"
    folder.mkdir()
    for i, r in enumerate(reqs):  # natural order: req_2 before req_10
        np.save(folder / f"req_{[2, 10, 11][i]}.npy", r)
    np.savez(tmp_path / "all.npz", b=reqs[0], a=reqs[1], c=reqs[2])  # archive order b, a, c
    for src in (folder, tmp_path / "all.npz"):
        n = import_trace("vllm", src, tmp_path / "x.parquet", TOY)
        tr = read_trace(tmp_path / "x.parquet")
        assert n == 8
        np.testing.assert_array_equal(tr.experts, np.concatenate(reqs))
        np.testing.assert_array_equal(tr.seq_id, [0, 0, 0, 1, 2, 2, 2, 2])
        np.testing.assert_array_equal(tr.position, [0, 1, 2, 0, 0, 1, 2, 3])
        assert tr.origin_gpu is None and tr.gates is None
    np.save(tmp_path / "one.npy", reqs[2])
    blocks = list(iter_vllm(tmp_path / "one.npy", TOY, chunk_tokens=3))
    assert [b.num_tokens for b in blocks] == [3, 1]


def _bad_vllm(tmp_path: Path, case: str) -> Path:
    good = _requests(1, [4])[0]
    p = tmp_path / "r.npy"
    if case == "shape":
        np.save(p, good[:, :2])
    elif case == "float":
        np.save(p, good.astype(np.float32))
    elif case == "range":
        bad = good.copy()
        bad[2, 1, 0] = 8
        np.save(p, bad)
    elif case == "duplicate":
        bad = good.copy()
        bad[3, 2] = [5, 5]
        np.save(p, bad)
    elif case == "empty":
        np.save(p, good[:0])
    elif case == "truncated":
        np.save(p, good)
        p.write_bytes(p.read_bytes()[:-10])
    elif case == "suffix":
        p = tmp_path / "r.txt"
        p.write_text("1 2")
    elif case == "empty folder":
        p = tmp_path / "none"
        p.mkdir()
    elif case == "bad npz":
        p = tmp_path / "r.npz"
        np.savez(p, a=good)
        p.write_bytes(p.read_bytes()[:40])
    return p


@pytest.mark.parametrize(
    "case,match",
    [
        ("shape", r"r.npy: 2 layers, but model .* has 3 MoE layers .*wrong --model"),
        ("float", "dtype float32; expert ids must be integers"),
        ("range", "r.npy: token 2, MoE layer 2: expert id 8 out of range 0..7"),
        ("duplicate", "r.npy: token 3, MoE layer 3: the 2 routed expert ids are not distinct"),
        ("empty", "empty request"),
        ("truncated", "cannot read the array"),
        ("suffix", "expected a .npy or .npz file"),
        ("empty folder", "holds no .npy or .npz files"),
        ("bad npz", "cannot read the array"),
    ],
)
def test_vllm_bad_input(tmp_path, case, match):
    src = _bad_vllm(tmp_path, case)
    out = tmp_path / "o" / "t.parquet"
    with pytest.raises(InputError, match=match):
        import_trace("vllm", src, out, TOY)
    assert not out.exists() and (not out.parent.exists() or _leftovers(out.parent) == [])


# ---------------------------------------------------------------- long table


def _long_table(tr_experts: np.ndarray, model: ModelSpec, **per_token: np.ndarray) -> pd.DataFrame:
    n, L, k = tr_experts.shape
    t, li, r = np.meshgrid(np.arange(n), np.arange(L), np.arange(k), indexing="ij")
    df = pd.DataFrame(
        {
            "token": t.ravel(),
            "layer": np.asarray(model.moe_layer_indices)[li.ravel()],
            "rank": r.ravel(),
            "expert": tr_experts.ravel().astype(np.int64),
        }
    )
    for name, v in per_token.items():
        df[name] = np.repeat(v, L * k)
    return df


def test_table_by_hand(tmp_path):
    # token 10: layer 1 -> (3, 1), layer 2 -> (0, 7), layer 3 -> (2, 4); token 11 likewise
    rows = [
        (10, 2, 1, 7, 0.2), (10, 1, 0, 3, 0.6), (10, 1, 1, 1, 0.4), (10, 2, 0, 0, 0.8),
        (10, 3, 0, 2, 0.5), (10, 3, 1, 4, 0.5),
        (11, 1, 0, 6, 0.9), (11, 1, 1, 5, 0.1), (11, 2, 0, 1, 0.7), (11, 2, 1, 2, 0.3),
        (11, 3, 0, 7, 0.6), (11, 3, 1, 0, 0.4),
    ]
    df = pd.DataFrame(rows, columns=["token", "layer", "rank", "expert", "gate"])
    df["seq_id"] = 4
    df["position"] = df["token"] - 10
    df.to_csv(tmp_path / "t.csv", index=False)
    import_trace("table", tmp_path / "t.csv", tmp_path / "t.parquet", TOY)
    tr = read_trace(tmp_path / "t.parquet")
    np.testing.assert_array_equal(tr.experts, [[[3, 1], [0, 7], [2, 4]], [[6, 5], [1, 2], [7, 0]]])
    np.testing.assert_allclose(tr.gates[0], [[0.6, 0.4], [0.8, 0.2], [0.5, 0.5]])
    np.testing.assert_array_equal(tr.seq_id, [4, 4])
    np.testing.assert_array_equal(tr.position, [0, 1])
    assert tr.origin_gpu is None and tr.step is None
    # without seq_id each token is its own sequence
    df[["token", "layer", "rank", "expert"]].to_parquet(tmp_path / "t2.parquet")
    import_trace("table", tmp_path / "t2.parquet", tmp_path / "t2.out.parquet", TOY)
    tr2 = read_trace(tmp_path / "t2.out.parquet")
    np.testing.assert_array_equal(tr2.seq_id, [10, 11])
    np.testing.assert_array_equal(tr2.position, [0, 0])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    batch_rows=st.integers(1, 40),
    csv=st.booleans(),
)
def test_table_round_trip_property(tmp_path, monkeypatch, sizes, seed, batch_rows, csv):
    """Any trace -> long table (shuffled within tokens) -> import gives the trace back."""
    monkeypatch.setattr(table_mod, "BATCH_ROWS", batch_rows)  # tokens straddle batches
    experts = np.concatenate(_requests(seed, sizes))
    n = experts.shape[0]
    rng = np.random.default_rng(seed)
    origin = rng.integers(0, 16, n)
    step = np.arange(n) // 3
    df = _long_table(experts, TOY, origin_gpu=origin, step=step)
    df["gate"] = rng.random(len(df)).astype(np.float32)
    df = df.groupby("token", group_keys=False).sample(frac=1, random_state=seed)
    src = tmp_path / ("t.csv" if csv else "t.parquet")
    df.to_csv(src, index=False) if csv else df.to_parquet(src, index=False)
    blocks = list(iter_table(src, TOY, chunk_tokens=2))
    got = np.concatenate([b.experts for b in blocks])
    np.testing.assert_array_equal(got, experts)
    np.testing.assert_array_equal(np.concatenate([b.origin_gpu for b in blocks]), origin)
    np.testing.assert_array_equal(np.concatenate([b.step for b in blocks]), step)
    gates = np.concatenate([b.gates for b in blocks])
    back = df.sort_values(["token", "layer", "rank"])["gate"].to_numpy()
    np.testing.assert_array_equal(gates.ravel(), back)


def _table_case(case: str) -> tuple[pd.DataFrame, str]:
    experts = np.concatenate(_requests(5, [3]))
    df = _long_table(experts, TOY, seq_id=np.array([0, 0, 1]))
    if case == "missing column":
        return df.drop(columns="rank"), "column\\(s\\) rank missing"
    if case == "unknown column":
        return df.assign(expret=1), "unknown column\\(s\\) expret"
    if case == "unsorted":
        swapped = pd.concat([df.iloc[6:12], df.iloc[:6], df.iloc[12:]])
        return swapped, "line 8: token 0 follows token 1"
    if case == "row count":
        return df.drop(index=3), "line 2: token 0 has 5 rows, expected 6"
    if case == "layer":
        return df.assign(layer=df["layer"].replace(3, 4)), "line 6: token 0: layer 4 out of range"
    if case == "rank":
        d = df.copy()
        d.loc[7, "rank"] = 2
        return d, "line 9: token 1: rank 2 out of range; must be 0..1"
    if case == "expert":
        d = df.copy()
        d.loc[13, "expert"] = 9
        return d, "line 15: token 2: expert 9 out of range; must be 0..7"
    if case == "duplicate slot":
        d = df.copy()
        d.loc[1, "rank"] = 0
        return d, "line 3: token 0, MoE layer 1, rank 0 appears twice"
    if case == "not distinct":
        d = df.copy()
        d.loc[9, "expert"] = d.loc[8, "expert"]
        return d, "line 8 \\(rows of token 1\\)|line 8: token 1, MoE layer 2: the 2 routed"
    if case == "per token":
        d = df.copy()
        d.loc[4, "seq_id"] = 7
        return d, "line 6: token 0: seq_id 7 differs from 0"
    if case == "empty":
        return df.iloc[:0], "has no rows"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["missing column", "unknown column", "unsorted", "row count", "layer", "rank", "expert",
     "duplicate slot", "not distinct", "per token", "empty"],
)
def test_table_bad_input(tmp_path, case):
    df, match = _table_case(case)
    src = tmp_path / "t.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "o" / "t.parquet"
    with pytest.raises(InputError, match=match):
        import_trace("table", src, out, TOY)
    assert not out.exists() and (not out.parent.exists() or _leftovers(out.parent) == [])


def test_table_bad_values_in_files(tmp_path):
    experts = np.concatenate(_requests(5, [2]))
    text = _long_table(experts, TOY).to_csv(index=False).splitlines()
    text[3] = text[3].replace(",", ",x", 1)
    (tmp_path / "a.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="a.csv: cannot read the table"):
        import_trace("table", tmp_path / "a.csv", tmp_path / "a.parquet", TOY)
    text = _long_table(experts, TOY).to_csv(index=False).splitlines()
    text[5] = text[5].rsplit(",", 1)[0] + ","
    (tmp_path / "b.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="b.csv, line 6: column 'expert' is empty"):
        import_trace("table", tmp_path / "b.csv", tmp_path / "b.parquet", TOY)
    _long_table(experts, TOY).assign(expert=0.5).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="column 'expert' has type double"):
        import_trace("table", tmp_path / "c.parquet", tmp_path / "c.out.parquet", TOY)
    g = _long_table(experts, TOY).assign(gate=1.0)
    g.loc[4, "gate"] = np.nan
    g.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(InputError, match="row 4: column 'gate' is empty|row 4: token 0: gate nan"):
        import_trace("table", tmp_path / "d.parquet", tmp_path / "d.out.parquet", TOY)
    full = tmp_path / "f.parquet"
    _long_table(experts, TOY).to_parquet(full)
    (tmp_path / "cut.parquet").write_bytes(full.read_bytes()[:-25])
    with pytest.raises(InputError, match="cut.parquet: cannot read the table"):
        import_trace("table", tmp_path / "cut.parquet", tmp_path / "cut.out.parquet", TOY)
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(InputError, match="expected a .csv"):
        import_trace("table", tmp_path / "e.json", tmp_path / "e.parquet", TOY)


# ---------------------------------------------------------------- command line


def test_cli_import(tmp_path, capsys):
    np.save(tmp_path / "r.npy", _requests(2, [5])[0])
    model_json = tmp_path / "toy.json"
    model_json.write_text(
        '{"name": "toy", "moe_layer_indices": [1, 2, 3], "num_routed_experts": 8,'
        ' "num_shared_experts": 0, "top_k": 2, "hidden_size": 16}'
    )
    out = tmp_path / "t.parquet"
    args = ["trace", "import", "--format", "vllm", str(tmp_path / "r.npy"), "--out", str(out)]
    assert main([*args, "--model", str(model_json)]) == 0
    assert "5 tokens of toy" in capsys.readouterr().out
    assert main([*args, "--model", str(model_json)]) == 2  # exists, no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--model", "no-such-model"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
    assert main(args[:-2] + ["--out", str(tmp_path / "u.parquet")]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert not (tmp_path / "u.parquet").exists()
