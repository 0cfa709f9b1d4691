"""Estimates before a study or sweep runs (traces/infra/limits.py, experiments/studies/
estimates.py): one line with the order of its CPU time (replays plus every solve's time limit)
when it may reach 10 s, hidden by -q, and a disk check that counts the per-token records of
the cells and of the merged tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import STUDY_MODEL_TOML
from test_estimates import Usage
from test_input_protection import _prepare, _run, _snapshot

from experiments.studies import load_study_file
from experiments.studies import runner as runner_module
from experiments.studies.estimates import failure_study_work
from traces.infra import limits

# tiny-moe (4 MoE layers, 16 experts) on a k=4 fat tree of 2 servers x 2 GPUs: 4 GPU links,
# 2 server-edge links, 2 edge-aggregation links = 8 links, 16 directions
STUDY = """
[study]
name = "estimates"
""" + STUDY_MODEL_TOML + """[topology]
family = "fat-tree"
params = {{ k = 4, num_servers = 2 }}
links = {{ gpus_per_server = 2 }}
[strategy]
options = {{ time_limit_s = 30.0 }}
[trace]
source = "synthetic"
fit_tokens = 512
replay_tokens = {tokens}
[axes]
"strategy.name" = {strategies}
"""


def _study(d: Path, tokens: int, strategies: str) -> Path:
    path = d / "study.toml"
    path.write_text(STUDY.format(tokens=tokens, strategies=strategies))
    return path


def test_each_cell_costs_its_replay_and_its_time_limit(tmp_path):
    study = load_study_file(_study(tmp_path, 4096, '["round-robin", "ilp-load"]'))
    rr, ilp = (c.work for c in study.cells)
    # 0.2 s fixed + 4096 tokens x 4 MoE layers x (2 us in des + 0.2 us for the analytic
    # count) = 0.2 + 0.0360448 = 0.2360448 s
    assert rr.replay_s == pytest.approx(0.2 + 4096 * 4 * 2.2e-6) == ilp.replay_s
    assert (rr.solve_limit_s, ilp.solve_limit_s) == (0.0, 30.0)  # round-robin solves nothing
    assert (rr.replay_tokens, rr.link_directions, rr.kind) == (4096, 16, "replay")
    line = limits.study_time_line("sweep", "cell", [rr, ilp])
    # replays 2 x 0.236 s = 0.472 s; one 30 s time limit: 30.5 s may be reached (>= 10 s)
    assert line == ("sweep: 2 cells; expect CPU time of the order of 0.47 s for the replays"
                    " (0.24 s per cell) plus at most 30 s of solver time (the time limits of"
                    " 1 cell, up to 30 s each); docs/background/estimates.md")
    assert limits.study_time_line("sweep", "cell", [rr]) is None  # 0.24 s: no line


def test_a_failure_study_costs_its_counts_replays_and_solves():
    work = failure_study_work(["round-robin", "ilp-load", "ilp-load+robust"], failures=10,
                              des_worst=2, tokens=1000, moe_layers=5, time_limit_s=60.0)
    # 1000 tokens x 5 layers: an analytic count 1e-3 s (0.2 us each), a DES replay 1e-2 s;
    # keep and re-place: 1 + 2 x 10 counts, 1 + 2 x 2 DES replays = 0.021 + 0.05 s;
    # robust only keeps: 1 + 10 counts, 1 + 2 DES = 0.011 + 0.03 s
    assert [w.replay_s for w in work] == pytest.approx([0.071, 0.071, 0.041])
    # ilp-load solves the healthy fabric and every failure: 11 x 60 s; robust once
    assert [w.solve_limit_s for w in work] == [0.0, 660.0, 60.0]
    line = limits.study_time_line("study failures", "strategy", work)
    assert line is not None and line.startswith("study failures: 3 strategies; expect CPU time"
                                                 " of the order of 0.18 s for the replays")
    assert "at most 12 min of solver time (the time limits of 2 strategies" in line  # 720 s


def test_a_failure_studys_des_replays_are_costed_by_their_counted_events():
    work = failure_study_work(["round-robin", "ilp-load+robust"], failures=10, des_worst=2,
                              tokens=1000, moe_layers=5, time_limit_s=60.0, des_hop_events=1e5)
    # round-robin: 21 counts = 0.021 s; 1 + 2 x 2 = 5 DES replays x 1e5 events x 10 us = 5 s;
    # robust only keeps: 11 counts = 0.011 s, 1 + 2 = 3 DES replays = 3 s
    assert [w.replay_s for w in work] == pytest.approx([5.021, 3.011])
    assert [w.des_hop_events for w in work] == [5e5, 3e5]
    # without DES replays the events cost nothing
    none = failure_study_work(["round-robin"], 10, 0, 1000, 5, 60.0, des_hop_events=1e5)
    assert none[0].replay_s == pytest.approx(0.021) and none[0].des_hop_events == 0


def _free(monkeypatch, free_bytes: float) -> None:
    monkeypatch.setattr(limits.shutil, "disk_usage",
                        lambda path: Usage(10 * 2**40, 10 * 2**40 - free_bytes, free_bytes))


def test_a_study_whose_token_records_cannot_fit_is_refused(tmp_path, monkeypatch):
    path = _study(tmp_path, 65536, '["round-robin"]')
    # the cell: 7 Parquet files x 1 KiB + 65,536 tokens / 32 = 2,048 bytes of records + 16
    # link directions x 1 byte = 9,232; the merged tables: results + 6 tables = 7 KiB and the
    # records again, 9,232: 18,464 bytes (18.0 KiB), of which 4,096 are the token records
    need = 2 * (7 * 1024 + 65536 // 32 + 16)
    work = [c.work for c in load_study_file(path).cells]
    assert limits.study_disk_bytes(work, work) == need == 18_464
    argv = ["sweep", str(path), "--serial", "--no-report", "-q", "--out", f"{tmp_path}/run"]
    before = _snapshot(tmp_path)
    _free(monkeypatch, need - 1)  # the files alone (14,336 bytes) would fit
    code, err = _run(argv)
    assert code == 2 and err.count("\n") == 1, err
    assert "the 1 cell to run (65,536 replayed tokens) needs at least 18.0 KiB of disk" in err
    assert _snapshot(tmp_path) == before  # nothing written
    _free(monkeypatch, need)
    code, err = _run(argv)
    assert code == 0 and (tmp_path / "run" / "tokens.parquet").is_file(), err
    shutil.rmtree(tmp_path / "run")


def test_sweep_says_the_time_order_unless_quiet(tmp_path):
    path = _study(tmp_path, 256, '["round-robin", "ilp-load"]')  # a 30 s time limit: a line
    argv = ["sweep", str(path), "--serial", "--no-report", "--out", f"{tmp_path}/run"]
    code, err = _run(argv)
    assert code == 0 and "sweep: 2 cells; expect CPU time of the order of" in err, err
    assert "at most 30 s of solver time" in err
    code, err = _run([*argv, "-q"])  # resumed: nothing to run, and no line either way
    assert code == 0 and "expect CPU time" not in err, err
    code, err = _run([*argv, "--overwrite", "-q"])  # every cell again, quietly
    assert code == 0 and "expect CPU time" not in err, err


@pytest.mark.parametrize("command", ["study paper", "study failures"])
def test_studies_say_the_time_order_unless_quiet(command, tmp_path, monkeypatch):
    from test_estimates import _argv

    _prepare(tmp_path)
    monkeypatch.setattr(limits, "LONG_RUN_S", 0.0)  # every study counts as long

    def stop(*args, **kwargs):  # the line comes before any cell runs
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "_run_in", stop)
    monkeypatch.setattr("experiments.studies.failures.run_failure_study", stop)
    argv = _argv(command, tmp_path)
    code, err = _run(argv)
    assert code == 130 and f"{command}: " in err and "expect CPU time of the order of" in err, err
    code, err = _run([*argv, "-q"])
    assert code == 130 and "expect CPU time" not in err, err
