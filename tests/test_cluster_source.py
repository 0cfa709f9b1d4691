"""`topology info|draw|whatif` take the cluster shorthands every other command takes.

A cluster file, `--fat-tree K SERVERS` or `--preset NAME`: exactly one, and a shorthand gives
the same answer as the file `topology build` writes for it.
"""

from __future__ import annotations

import pytest

from experiments.cli import main


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own refusals (two shorthands at once)
        return int(e.code or 0)


def _built(tmp_path, capsys, *how: str):
    path = tmp_path / "c.json"
    assert main(["topology", "build", *how, "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def test_info_shorthand_equals_the_built_file(tmp_path, capsys):
    path = _built(tmp_path, capsys, "fat-tree", "--param", "k=4", "--param", "num_servers=2")
    assert main(["topology", "info", str(path)]) == 0
    from_file = capsys.readouterr().out
    assert main(["topology", "info", "--fat-tree", "4", "2"]) == 0
    assert capsys.readouterr().out == from_file


def test_whatif_shorthand_equals_the_built_file(tmp_path, capsys):
    path = _built(tmp_path, capsys, "fat-tree", "--param", "k=4", "--param", "num_servers=2")
    fail = ["--fail", "server:s0"]
    assert main(["topology", "whatif", str(path), *fail, "--out", str(tmp_path / "a.json")]) == 0
    assert main(["topology", "whatif", "--fat-tree", "4", "2", *fail,
                 "--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_draw_takes_a_preset(tmp_path, capsys):
    out = tmp_path / "d.png"
    assert main(["topology", "draw", "--preset", "nvl72-4racks", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", ["info", "draw", "whatif"])
@pytest.mark.parametrize("given", [[], ["c.json", "--fat-tree", "4", "2"],
                                   ["--fat-tree", "4", "2", "--preset", "nvl72-4racks"]])
def test_exactly_one_cluster(tmp_path, capsys, monkeypatch, command, given):
    monkeypatch.chdir(tmp_path)
    out = ["--out", "o.png" if command == "draw" else "o.json"] if command != "info" else []
    assert _exit_code(["topology", command, *given, *out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--fat-tree" in err and "--preset" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_positional_input_is_named_by_its_path(tmp_path, capsys, monkeypatch):
    # a positional argument has no flag: the refusal names the path, not the argparse dest
    monkeypatch.chdir(tmp_path)
    assert main(["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "8",
                 "--out", "t.parquet", "-q"]) == 0
    before = (tmp_path / "t.parquet").read_bytes()
    assert main(["trace", "concat", "t.parquet", "--out", "t.parquet"]) == 2
    err = capsys.readouterr().err
    assert "--out t.parquet: is the input t.parquet;" in err and "input inputs" not in err
    assert (tmp_path / "t.parquet").read_bytes() == before
