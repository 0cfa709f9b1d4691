"""Every bad input in ``tests/badinput.py``: one clear InputError, exit code 2, nothing left behind.

Library cases call the reader directly; CLI cases run ``moe-netsim`` in-process (cheap) and the
few marked ``subprocess`` also as ``python -m experiments`` (the real exit code and stderr).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from badinput import CASES, Case, prepare_cli_dir, run_cli_case
from error_catalogue import assert_catalogued

from traces.infra.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [c for c in CASES if not c.is_cli]
CLI = [c for c in CASES if c.is_cli]


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _check_message(c: Case, msg: str) -> None:
    assert msg.strip(), f"{c.id}: empty message"
    assert "\n" not in msg.strip(), f"{c.id}: message is not one line: {msg!r}"
    assert "Traceback" not in msg
    for fragment in c.expect:
        assert fragment in msg, f"{c.id}: {fragment!r} not in message {msg!r}"


@pytest.mark.parametrize("c", LIBRARY, ids=[c.id for c in LIBRARY])
def test_library_rejects_with_one_clear_input_error(c: Case, tmp_path: Path) -> None:
    assert c.setup is not None
    thunk = c.setup(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(InputError) as info:
        thunk()
    _check_message(c, str(info.value))
    assert_catalogued(c, str(info.value), tmp_path)
    assert _listing(tmp_path) == before, f"{c.id}: files left behind"


@pytest.mark.parametrize("c", CLI, ids=[c.id for c in CLI])
def test_cli_exits_2_with_one_line(c: Case, tmp_path: Path) -> None:
    code, err = run_cli_case(c, tmp_path)
    before = _listing(tmp_path)
    assert code == 2, f"{c.id}: exit code {code}, stderr {err!r}"
    assert err.startswith("moe-netsim: error: ")
    _check_message(c, err)
    assert_catalogued(c, err, tmp_path)
    for name in c.must_not_exist:
        assert not (tmp_path / name).exists()
    assert not [p for p in before if ".partial." in p], "half-built run directory left"
    assert (tmp_path / "existing" / "keep.txt").read_text() == "old run\n"


SUBPROCESS = [c for c in CLI if c.subprocess]


@pytest.mark.parametrize("c", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_cli_subprocess_exit_2_no_traceback(c: Case, tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    before = _listing(tmp_path)
    argv = [a.replace("{dir}", str(tmp_path)) for a in c.argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "experiments", *argv], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    _check_message(c, r.stderr)
    assert _listing(tmp_path) == before


def test_internal_errors_are_one_line_exit_1(monkeypatch, capsys) -> None:
    """A bug (not bad input) still ends as one line, exit 1, unless a traceback is asked for."""
    from experiments import cli
    from experiments.commands import demo

    def boom(args):  # noqa: ANN001, ANN202
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(demo, "run", boom)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError: boom" in err
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["demo"])


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_the_valid_inputs_the_cases_break_do_load(tmp_path: Path) -> None:
    """Each case breaks one thing in a valid input; the valid inputs themselves must load."""
    import json

    import numpy as np
    from badinput import TINY, _cluster_dict, tiny_trace, valid_trace_file
    from badinput_clusters import _layout_frame, _problem
    from badinput_traces import _counts

    from placement.layout_io import load_layout
    from simulator.cluster.io import cluster_from_dict
    from simulator.cluster.paths import build_route_table
    from traces import ModelSpec
    from traces.io import read_trace
    from traces.load_stats import read_sglang_logical_count

    assert np.array_equal(read_trace(valid_trace_file(tmp_path)).experts, tiny_trace().experts)
    assert ModelSpec.from_dict(TINY.to_dict()) == TINY
    as_numpy = {k: (np.int64(v) if isinstance(v, int) else v) for k, v in TINY.to_dict().items()}
    assert ModelSpec.from_dict(as_numpy) == TINY  # numpy integers are integers
    build_route_table(cluster_from_dict(_cluster_dict()))
    _layout_frame().to_csv(tmp_path / "l.csv", index=False)
    assert load_layout(tmp_path / "l.csv", 2, 4, 2, (1, 2)).expert_gpus.shape == (2, 4, 1)
    (tmp_path / "s.json").write_text(json.dumps({"logical_count": _counts()}))
    read_sglang_logical_count(tmp_path / "s.json", TINY).activation()
    _problem()()


def test_real_sglang_statistics_load(sglang_dir: Path) -> None:
    """Every real SGLang file reads, and its activation rows sum to top_k (the strategy's input)."""
    import numpy as np

    from traces import model_preset
    from traces.load_stats import read_sglang_logical_count

    model = model_preset("deepseek-r1")
    files = sorted(sglang_dir.glob("*.json"))
    assert files
    for f in files:
        p = read_sglang_logical_count(f, model).activation()
        assert np.allclose(p.sum(axis=1), model.top_k)
