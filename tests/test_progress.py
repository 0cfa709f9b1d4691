"""Progress on stderr: on for a terminal or with --progress, off in logs and pipes, and -q
silences it together with the informational lines; stdout never carries it."""

from __future__ import annotations

import argparse

import pytest

from experiments.cli import build_parser, main
from experiments.progress import Feedback

# every command that can run longer than a few seconds
LONG_COMMANDS = [("trace", "synth"), ("trace", "import"), ("trace", "stats"), ("trace", "record"),
                 ("trace", "concat"), ("trace", "export"), ("rebalance",),
                 ("topology", "bench"), ("topology", "build"), ("topology", "draw"),
                 ("topology", "info"), ("topology", "whatif"), ("topology", "import"),
                 ("report",), ("place",), ("simulate",), ("study", "paper"),
                 ("study", "failures"), ("sweep",),
                 ("demo",)]


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    p = build_parser()
    for name in path:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = action.choices[name]
    return p


@pytest.mark.parametrize("path", LONG_COMMANDS, ids=" ".join)
def test_long_commands_take_quiet_and_progress(path):
    options = {s for a in _subparser(path)._actions for s in a.option_strings}
    assert {"-q", "--quiet", "--progress"} <= options


def test_feedback_policy():
    ns = argparse.Namespace
    assert Feedback.from_args(ns(quiet=True, progress=False)) == Feedback(bars=False, notes=False)
    assert Feedback.from_args(ns(quiet=False, progress=True)) == Feedback(bars=True, notes=True)
    # pytest's stderr is not a terminal: no bar unless asked
    assert Feedback.from_args(ns(quiet=False, progress=False)) == Feedback(bars=False, notes=True)


def _synth(tmp_path, *extra):
    return main(["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "300",
                 "--chunk-tokens", "100", "--out", str(tmp_path / "t.parquet"), *extra])


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert _synth(tmp_path) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("wrote 300 tokens")


def test_progress_flag_draws_the_bar_on_stderr_only(tmp_path, capsys):
    assert _synth(tmp_path, "--progress") == 0
    out, err = capsys.readouterr()
    assert "trace synth deepseek-v2-lite" in err and "100%" in err and "300/300" in err
    assert "%" not in out


def test_quiet_and_progress_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit) as exc:
        _synth(tmp_path, "-q", "--progress")
    assert exc.value.code == 2


def test_quiet_silences_notes(capsys):
    Feedback(bars=False, notes=False).note("hidden")
    Feedback(bars=False, notes=True).note("shown")
    assert capsys.readouterr().err == "shown\n"


def test_ticking_bar_for_a_call_without_progress(capsys):
    import time

    with Feedback(bars=True).ticking(None, "solving"):
        time.sleep(0.7)
    err = capsys.readouterr().err
    assert "solving:" in err and " s" in err


@pytest.mark.parametrize("argv", [
    ["trace", "export", "{d}/t.parquet", "--format", "topk-parquet", "--out", "{d}/e.parquet"],
    ["trace", "export", "{d}/t.parquet", "--format", "megatron", "--out", "{d}/m"],
    ["trace", "concat", "{d}/t.parquet", "{d}/u.parquet", "--out", "{d}/c.parquet"],
], ids=lambda a: " ".join(a[:4]))
def test_trace_export_and_concat_count_tokens_on_their_bar(tmp_path, capsys, argv):
    assert _synth(tmp_path) == 0
    assert main(["trace", "synth", "--model", "deepseek-v2-lite", "--tokens", "200", "--seed",
                 "1", "--out", str(tmp_path / "u.parquet")]) == 0
    capsys.readouterr()
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    total = "500/500" if "concat" in argv else "300/300"  # tokens of the inputs
    assert main([*argv, "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "100%" in err and total in err and "%" not in out, err
    assert main([*argv, "--overwrite", "-q"]) == 0
    assert capsys.readouterr()[1] == ""


def test_a_slow_cluster_shows_a_bar_a_quick_one_none(tmp_path, capsys, monkeypatch):
    import time

    from experiments.commands import cluster_args
    from simulator.cluster import presets

    assert main(["topology", "info", "--fat-tree", "4", "4", "--progress"]) == 0
    assert "cluster:" not in capsys.readouterr().err  # built well within the delay
    build = presets.build_preset

    def slow(*a):  # noqa: ANN002, ANN202
        time.sleep(0.6)
        return build(*a)

    monkeypatch.setattr(cluster_args, "CLUSTER_BAR_DELAY_S", 0.1)
    monkeypatch.setattr(presets, "build_preset", slow)
    assert main(["topology", "info", "--preset", "deepseek-prefill-ep32", "--progress"]) == 0
    assert "cluster: building --preset deepseek-prefill-ep32:" in capsys.readouterr().err
    assert main(["topology", "info", "--preset", "deepseek-prefill-ep32", "-q"]) == 0
    assert "cluster:" not in capsys.readouterr().err


def test_topology_import_shows_its_steps_and_q_silences_them(tmp_path, capsys):
    """A 512-rank matrix imports in about 25 s CPU (one link per rank pair): a bar per step."""
    (tmp_path / "m.json").write_text('{"rank_cost_matrix": [[0, 1], [1, 0]]}')
    argv = ["topology", "import", "--matrix", str(tmp_path / "m.json"), "--out",
            str(tmp_path / "c.json")]
    assert main([*argv, "--progress"]) == 0
    err = capsys.readouterr().err
    for step in ("reading m.json", "2 ranks, one link per pair", "writing c.json"):
        assert f"topology import: {step}" in err, err
    assert main([*argv, "--overwrite", "-q"]) == 0
    assert capsys.readouterr().err == ""
