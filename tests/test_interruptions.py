"""Runs stopped from outside: an unreachable --scheduler, Ctrl-C in the middle of a run, a reader
that closes the pipe after one line.  Each is one line (or none) and exit 2 / 130 / 0, with no
traceback and nothing half-written.  Subprocesses, as a user runs them; no timing is asserted
(the interrupt is sent once the run has shown its first progress line)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from badinput import prepare_cli_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _closed_port() -> int:
    """A local port nobody listens on (bound by the system, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_scheduler_is_one_line_naming_it_and_leaves_no_run(tmp_path: Path):
    prepare_cli_dir(tmp_path)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    res = subprocess.run(
        [sys.executable, "-m", "experiments", "sweep", str(tmp_path / "study.toml"),
         "--scheduler", address, "--out", str(tmp_path / "sw"), "-q"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]  # after the study's own warnings, if any
    assert last.startswith("moe-netsim: error: --scheduler") and address in last, res.stderr
    assert res.stderr.count("moe-netsim: error") == 1
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "sw").exists()  # never a run directory marked "running"


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("sig", "code", "line"), [
    (signal.SIGINT, 130, "moe-netsim: interrupted"),  # Ctrl-C
    (signal.SIGTERM, 143, "moe-netsim: terminated"),  # 128 + SIGTERM, as shells report it
], ids=["ctrl-c", "sigterm"])
def test_a_signal_in_the_middle_of_a_run_leaves_no_output(tmp_path: Path, sig, code, line):
    out = tmp_path / "big.parquet"
    # 2M R1 tokens: seconds of work at least, and 0.9 GB by the disk check (100M needed 43 GiB
    # free, so the check refused the run on a fuller disk before the signal could stop it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "trace", "synth", "--model", "deepseek-r1",
         "--tokens", "2000000", "--chunk-tokens", "4096", "--progress", "--out", str(out)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a suite started in the background (`make test &`) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child
        preexec_fn=_default_signals,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the bar's first line: the run is under way
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == code, first + rest
    assert rest.strip().splitlines()[-1] == line
    assert "Traceback" not in first + rest
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no temporary left either


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipe")
@pytest.mark.parametrize("argv", [
    ["topology", "list"],
    ["topology", "show", "fat-tree"],
    ["trace", "stats", "{d}/trace.parquet", "--out", "{d}/st"],
], ids=lambda a: " ".join(a[:2]))
def test_a_reader_that_stops_after_one_line_is_no_error(argv: list[str], tmp_path: Path):
    prepare_cli_dir(tmp_path)
    cmd = " ".join([sys.executable, "-m", "experiments", *(a.replace("{d}", str(tmp_path))
                                                         for a in argv)])
    res = subprocess.run(["bash", "-c", f"{cmd} | head -1; exit ${{PIPESTATUS[0]}}"], cwd=ROOT,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.count("\n") == 1
