"""The exit-code policy (docs/reference/outputs.md): 2 for input errors, OS errors about the
user's paths included; 130 for Ctrl-C at any moment; 1 only for bugs; a closed stdout is no
error and the command still writes its files."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from badinput import prepare_cli_dir

import experiments.cli as cli

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


def test_ctrl_c_during_start_up_is_130_without_traceback(monkeypatch) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert _run(["--help"]) == (130, "moe-netsim: interrupted\n")


def test_the_entry_module_imports_nothing_heavy() -> None:
    """Ctrl-C while the console script imports ``experiments.cli`` lands in main(): the module
    itself imports only the standard library; the commands come in inside main()."""
    code = ("import sys, experiments.cli; heavy = [m for m in ('numpy', 'pandas', 'traces')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert out.strip() == "[]"


def test_disk_full_names_the_users_file_and_exits_2(tmp_path: Path, monkeypatch) -> None:
    """The error comes from the hidden temporary file; the user sees the file they named."""
    import pyarrow.parquet as pq

    prepare_cli_dir(tmp_path)
    (tmp_path / "counts.json").write_text('{"logical_count": [[0, 0, 0, 0, 0, 0, 0, 0],'
                                          ' [1, 2, 3, 4, 5, 6, 7, 8],'
                                          ' [8, 7, 6, 5, 4, 3, 2, 1]]}')

    def full(table, where, **kwargs):  # noqa: ANN001 - pq.write_table's signature
        raise OSError(28, f"No space left on device: {where}", str(where))

    monkeypatch.setattr(pq, "write_table", full)
    out = tmp_path / "stats.parquet"
    code, err = _run(["trace", "import", "--format", "sglang", str(tmp_path / "counts.json"),
                      "--model", str(tmp_path / "tiny.json"), "--out", str(out)])
    assert code == 2
    assert err.startswith(f"moe-netsim: error: --out {out}: No space left on device"), err
    assert ".tmp" not in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_os_error_in_a_run_directory_names_the_users_directory(tmp_path: Path,
                                                               monkeypatch) -> None:
    import experiments.outputs as outputs  # simulate imports its writers when it runs

    prepare_cli_dir(tmp_path)

    def read_only(path, frame):  # noqa: ANN001
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(outputs, "write_parquet", read_only)
    run = tmp_path / "run"
    code, err = _run(["simulate", "--mode", "analytic", "--trace", f"{tmp_path}/trace.parquet",
                      "--topology", f"{tmp_path}/cluster.json", "--layout",
                      f"{tmp_path}/layout.csv", "--out", str(run)])
    assert code == 2
    # the flag and the directory the user named, then the file inside it
    assert err.startswith(f"moe-netsim: error: --out {run}: {run}/links.parquet: Read-only"), err
    assert not run.exists() and not [p for p in tmp_path.iterdir() if ".partial." in p.name]


def test_a_bug_is_exit_1_with_one_line(monkeypatch) -> None:
    def bug(args) -> int:  # noqa: ANN001
        raise ZeroDivisionError("boom")

    import experiments.commands.topology as topology

    monkeypatch.setattr(topology, "run_list", bug)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    code, err = _run(["topology", "list"])
    assert code == 1 and err.startswith("moe-netsim: internal error: ZeroDivisionError: boom")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipe")
def test_place_into_a_closed_pipe_still_writes_the_layout(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    out = tmp_path / "layout.parquet"
    cmd = (f"{sys.executable} -m experiments place --topology {tmp_path}/cluster.json --stats"
           f" {tmp_path}/trace.parquet --strategy round-robin --origins dp --out {out} | head -1;"
           " exit ${PIPESTATUS[0]}")
    res = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and res.stdout.startswith("strategy")
    assert out.is_file() and (tmp_path / "layout.parquet.meta.json").is_file()


def test_a_placement_stopped_by_its_time_limit_is_an_input_error(tmp_path: Path) -> None:
    """HiGHS stopped by --time-limit before any layout: the user's limit to raise, so exit 2
    with one line naming the flag (it was exit 1, the bugs' code, naming ``time_limit_s``)."""
    prepare_cli_dir(tmp_path)
    code, err = _run(["place", "--topology", str(tmp_path / "cluster.json"), "--fit",
                      str(tmp_path / "trace.parquet"), "--strategy", "ilp-load",
                      "--time-limit", "1e-9", "--out", str(tmp_path / "l.parquet")])
    assert code == 2, err
    assert err.startswith("moe-netsim: error: --time-limit 1e-09: placement ilp-load"), err
    assert err.count("\n") == 1 and "raise the time limit" in err
    assert not (tmp_path / "l.parquet").exists()
