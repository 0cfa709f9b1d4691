"""Every output flag of every writing command pointed at a place that cannot hold it: the
working directory as ``.`` or ``..`` (with and without --overwrite), and a directory that
refuses new files (read-only, or no permission).  Each run exits 2 with one line on stderr
that names the flag and the user's path, never a hidden temporary, and no traceback; no
input is touched and nothing is left behind.  In-process (experiments.cli.main), as
tests/test_input_protection.py."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from test_input_protection import COMMANDS, _prepare, _run, _snapshot

OUTPUTS = [(c, flag) for c in COMMANDS for flag in c.outputs]


def _argv(c, d: Path, flag: str, target: str) -> list[str]:  # type: ignore[no-untyped-def]
    argv = [a.replace("{d}", str(d)) for a in c.argv] + [flag, target]
    if flag != "--out":
        argv += ["--out", str(d.parent / "fresh" / c.out_names[0])]
    return argv


@pytest.mark.parametrize(
    ("c", "flag", "target", "overwrite"),
    [pytest.param(c, flag, t, o, id=f"{c.name} {flag} {t}" + (" --overwrite" if o else ""))
     for c, flag in OUTPUTS for t in (".", "..") for o in (False, True)],
)
def test_the_working_directory_as_output_is_refused(
    c, flag: str, target: str, overwrite: bool, tmp_path: Path, monkeypatch
) -> None:
    """``--out .`` was an internal error in `place --overwrite` (its .meta.json sibling of a
    path without a name); ``.`` and ``..`` hold the inputs, so every command refuses them."""
    d = tmp_path / "case"
    d.mkdir()
    _prepare(d)
    (d / "sub").mkdir()
    monkeypatch.chdir(d if target == "." else d / "sub")
    before = _snapshot(tmp_path)
    code, err = _run(_argv(c, d, flag, target) + (["--overwrite"] if overwrite else []))
    assert code == 2, err
    assert err.startswith(f"moe-netsim: error: {flag} {target}") and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before


def _refusing(call):  # type: ignore[no-untyped-def]
    """``tempfile.mkstemp``/``mkdtemp`` in a directory that refuses new entries, with the
    error the OS gives there: about the temporary name it tried."""
    def refuse(suffix=None, prefix=None, dir=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        if dir is not None and "refusing" in str(dir):
            name = os.path.join(dir, f"{prefix or 'tmp'}x1y2z3{suffix or ''}")
            raise PermissionError(errno.EACCES, "Permission denied", name)
        return call(suffix, prefix, dir, *args, **kwargs)

    return refuse


@pytest.mark.parametrize(("c", "flag"), [pytest.param(c, f, id=f"{c.name} {f}")
                                         for c, f in OUTPUTS])
def test_an_output_in_a_directory_that_refuses_files_names_the_flag(
    c, flag: str, tmp_path: Path, monkeypatch
) -> None:
    """The OS error names the flag and the path the user gave (it named the hidden temporary
    of place, topology build and topology draw, or no flag), exit 2, nothing left behind."""
    d = tmp_path / "case"
    d.mkdir()
    _prepare(d)
    (tmp_path / "refusing").mkdir()
    target = tmp_path / "refusing" / c.out_names[c.outputs.index(flag)]
    monkeypatch.setattr(tempfile, "mkstemp", _refusing(tempfile.mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", _refusing(tempfile.mkdtemp))
    before = _snapshot(tmp_path)
    code, err = _run(_argv(c, d, flag, str(target)))
    assert code == 2, err
    last = err.splitlines()[-1]  # after the lines of a command that was under way
    if c.name in STOPS_BEFORE_WRITING:
        assert str(target) not in last, last
        return
    assert last.startswith(f"moe-netsim: error: {flag} {target}: "), err
    assert err.count("moe-netsim: error") == 1 and "x1y2z3" not in err, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before


# The protection table's cases of these stop on their (tiny) model before they write: the
# tiny model has no expert geometry (rebalance prices weight bytes) and no torch checkpoint.
STOPS_BEFORE_WRITING = {"rebalance", "trace record"}
