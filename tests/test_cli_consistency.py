"""One flag name per idea across commands: the cluster shorthand wherever a cluster is taken,
``--fit`` for what a placement is fitted to (older names kept as aliases), ``--model FILE.json``
wherever a model is named."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from badinput import TINY, prepare_cli_dir, run_cli
from test_option_registry import LEAVES

from experiments.cli import build_parser
from traces.io import read_trace_meta
from traces.origins import coverage_warning


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_every_command_with_topology_takes_the_fat_tree_shorthand() -> None:
    with_cluster = [c for c, p in LEAVES.items() if "--topology" in _flags(p)]
    assert {"place", "simulate", "trace stats"} <= set(with_cluster)
    for command in with_cluster:
        assert "--fat-tree" in _flags(LEAVES[command]), command


def test_no_help_shows_an_empty_default() -> None:
    for command, parser in LEAVES.items():  # e.g. --origins: "" means "recorded, else dp"
        text = " ".join(parser.format_help().split())
        assert "(default: )" not in text and "(default: [])" not in text, command


def test_fit_is_the_one_name_with_the_old_names_as_aliases() -> None:
    for command, old in (("place", "--stats"), ("study paper", "--fit-trace")):
        flags = _flags(LEAVES[command])
        assert "--fit" in flags and old in flags, command
    parser = build_parser()
    a = parser.parse_args(["place", "--fat-tree", "4", "2", "--fit", "x.json", "--out", "l.csv"])
    b = parser.parse_args(["place", "--fat-tree", "4", "2", "--stats", "x.json", "--out", "l.csv"])
    assert a.stats == b.stats == Path("x.json")


def test_simulate_and_trace_stats_on_a_fat_tree_shorthand(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    # 4-ary fat tree with 2 servers of 8 GPUs: the layout's GPUs 0..3 exist
    code, err = run_cli(["simulate", "--mode", "analytic", "--trace", f"{tmp_path}/trace.parquet",
                      "--fat-tree", "4", "2", "--layout", f"{tmp_path}/layout.csv",
                      "--out", f"{tmp_path}/run"])
    # the tiny trace records every token on GPU 0: 1 of the 16 GPUs, the one warning
    assert (code, err) == (0, coverage_warning(1, 16) + "\n")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["topology"] == "--fat-tree 4 2"
    code, err = run_cli(["trace", "stats", f"{tmp_path}/trace.parquet", "--layout",
                      f"{tmp_path}/layout.csv", "--fat-tree", "4", "2",
                      "--out", f"{tmp_path}/stats"])
    assert (code, err) == (0, "")
    code, err = run_cli(["simulate", "--mode", "analytic", "--trace", f"{tmp_path}/trace.parquet",
                      "--fat-tree", "4", "2", "--topology", f"{tmp_path}/cluster.json",
                      "--layout", f"{tmp_path}/layout.csv", "--out", f"{tmp_path}/run2"])
    assert code == 2 and "not allowed with argument" in err


def test_trace_synth_takes_a_model_file_like_trace_import(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    out = tmp_path / "syn.parquet"
    code, err = run_cli(["trace", "synth", "--model", f"{tmp_path}/tiny.json", "--tokens", "16",
                      "--out", str(out)])
    assert (code, err) == (0, "")
    assert read_trace_meta(out)[0].model == TINY
