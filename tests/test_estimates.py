"""Estimates before work (traces/infra/limits.py): the outputs of simulate, both studies,
sweep and rebalance are compared with the free disk of --out (refused in one line, exit 2, nothing
written), and a long replay or a large placement ILP is announced on one line first."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from test_input_protection import COMMANDS, _prepare, _run, _snapshot

from simulator.modes import SIM_MODES
from traces.infra import limits

Usage = namedtuple("Usage", "total used free")
DISK_WRITERS = ["simulate", "sweep", "study paper", "study failures", "rebalance"]


def _argv(name: str, d: Path) -> list[str]:
    command = next(c for c in COMMANDS if c.name == name)
    return [a.replace("{d}", str(d)) for a in command.argv] + [
        "--out", f"{d}/{command.out_names[0]}"]


def _free(monkeypatch, free_bytes: int) -> None:
    monkeypatch.setattr(limits.shutil, "disk_usage",
                        lambda path: Usage(10 * 2**40, 10 * 2**40 - free_bytes, free_bytes))


@pytest.mark.parametrize("name", DISK_WRITERS)
def test_outputs_that_cannot_fit_the_disk_are_refused_before_work(name, tmp_path, monkeypatch):
    _prepare(tmp_path)
    before = _snapshot(tmp_path)
    _free(monkeypatch, 100)  # 100 bytes free: less than any run directory's first file
    code, err = _run(_argv(name, tmp_path))
    errors = [line for line in err.splitlines() if line.startswith("moe-netsim: error:")]
    assert code == 2 and len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    assert "needs at least" in err and "of disk at" in err and "100 B free there" in err, err
    assert "another file system" in err  # how to fix it
    assert _snapshot(tmp_path) == before  # nothing written, no input touched


def test_simulate_counts_its_tables_and_per_token_records(tmp_path, monkeypatch):
    _prepare(tmp_path)
    argv = _argv("simulate", tmp_path)
    need = {}
    for mode in ("analytic", "des"):
        seen = []
        monkeypatch.setattr(limits, "check_disk", lambda b, *a, s=seen: s.append(b))
        assert _run([*argv, "--mode", mode, "--no-report"])[0] == 0
        need[mode] = seen[0]
        shutil.rmtree(tmp_path / "run")
    # the tiny cluster: 2 servers x 2 GPUs and one switch = 6 links, 12 directions;
    # analytic: 3 tables x 1 KiB + 12 bytes; des: 7 tables + 12 bytes + 6 tokens x 1/32 byte
    assert need == {"analytic": 3 * 1024 + 12, "des": 7 * 1024 + 12 + 6 / 32}


def test_a_rerun_needs_disk_only_for_the_cells_still_to_run(tmp_path, monkeypatch):
    _prepare(tmp_path)
    argv = _argv("sweep", tmp_path)
    assert _run(argv)[0] == 0
    _free(monkeypatch, 100)  # every cell is done: a re-run writes no cell
    code, err = _run(argv)
    assert code == 0, err


def test_the_time_order_lines(monkeypatch) -> None:
    # R1's flow replay of docs/benchmarks.md: 262,144 tokens x 58 layers x 2 us = 30.4 s
    line = limits.run_time_line("simulate", 262_144, 58, "flow")
    assert line is not None and "of the order of 30 s" in line and "262,144 tokens" in line
    assert limits.run_time_line("simulate", 262_144, 58, "analytic") is None  # 3.0 s
    assert "of the order of 5 h" in limits.run_time_line("x", 10**8, 90, "flow")  # 18,000 s
    # the DES: 4.1e6 hop events x 10 us = 41 s; 1e5 hop events x 10 us = 1 s is short
    line = limits.des_time_line("simulate", 4.1e6)
    assert line is not None and "of the order of 41 s" in line and "4.1e+06 hop events" in line
    assert limits.des_time_line("simulate", 1e5) is None
    # the paper's fat tree: 58 layers x 256 experts x 32 GPUs = 475,136 binaries
    line = limits.ilp_size_line("place", 58, 256, 32, 60.0)
    assert line is not None and "475,136 binaries" in line and "60 s" in line
    assert limits.ilp_size_line("place", 2, 8, 4, 60.0) is None
    assert sorted(limits.CPU_S_PER_TOKEN_LAYER) == sorted(SIM_MODES)


def test_simulate_says_the_time_order_unless_quiet(tmp_path, monkeypatch):
    _prepare(tmp_path)
    monkeypatch.setattr(limits, "LONG_RUN_S", 0.0)  # every run counts as long
    argv = [*_argv("simulate", tmp_path), "--no-report"]
    code, err = _run(argv)
    assert code == 0 and "simulate: expect CPU time of the order of" in err, err
    code, err = _run([*argv, "--overwrite", "-q"])
    assert code == 0 and "expect CPU time" not in err, err
