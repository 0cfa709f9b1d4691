"""Start-up stays light: building the parser (every ``--help``) and the light commands import
none of the heavy libraries; a command imports them when it runs.  The speed itself is measured
by ``benchmarks/bench_startup.py`` (docs/benchmarks.md), never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from experiments.cli import command_paths

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "pandas", "matplotlib", "dask", "distributed", "highspy", "simpy", "pyarrow",
         "networkx", "scipy", "torch")
LIGHT_COMMANDS = (("topology", "list"), ("topology", "show", "fat-tree"))

# One interpreter runs the commands in turn and names, for each, the heavy libraries that were
# first imported while it ran (the first offender is found exactly; later ones may hide behind it).
_PROBE = """
import contextlib, io, json, sys
from experiments.cli import main
heavy = set(sys.argv[1].split(','))
def loaded():
    return {m.split('.')[0] for m in sys.modules} & heavy
report = {'import experiments.cli': sorted(loaded())}
for argv in json.loads(sys.argv[2]):
    before = loaded()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    report[' '.join(argv)] = sorted(loaded() - before)
print(json.dumps(report))
"""


def _probe(commands: list[list[str]]) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY), json.dumps(commands)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_and_light_commands_import_no_heavy_library():
    commands = [[*path, "--help"] for path in command_paths()] + [list(c) for c in LIGHT_COMMANDS]
    report = _probe(commands)
    assert len(report) == len(commands) + 1
    assert {cmd: mods for cmd, mods in report.items() if mods} == {}


def test_the_probe_sees_imports(tmp_path):
    # not blind: a command that builds a cluster imports networkx when it runs
    out = str(tmp_path / "c.json")
    assert "networkx" in _probe([["topology", "build", "fat-tree", "--out", out]])[
        f"topology build fat-tree --out {out}"]


def test_lazy_package_attributes_resolve():
    import importlib

    import placement
    import traces

    for package in (traces, placement):
        assert sorted(package._WHERE) == sorted(package.__all__)
        for name in package.__all__:
            module = importlib.import_module(package._WHERE[name])
            assert getattr(package, name) is getattr(module, name)


def test_every_strategy_resolves():
    from placement.strategies import _WHERE, STRATEGIES

    assert list(STRATEGIES) == list(_WHERE)
    assert all(callable(STRATEGIES[name]) for name in STRATEGIES)


def _typing_only_names_used_at_run_time(path: Path) -> list[str]:
    """Names imported under ``if TYPE_CHECKING:`` but used outside annotations, where they
    would raise NameError (the price of moving imports into functions)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only, top = set(), set()
    for node in tree.body:
        is_tc = isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(node) if is_tc or isinstance(node, ast.Import | ast.ImportFrom) else ():
            if isinstance(n, ast.Import | ast.ImportFrom):
                (typing_only if is_tc else top).update(
                    (a.asname or a.name).split(".")[0] for a in n.names)
    typing_only -= top
    bad = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)):
        local = {(a.asname or a.name).split(".")[0] for n in ast.walk(fn)
                 if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        annotations = set()
        for n in ast.walk(fn):
            if isinstance(n, ast.arg) and n.annotation is not None:
                annotations |= {id(x) for x in ast.walk(n.annotation)}
            if isinstance(n, ast.FunctionDef) and n.returns is not None:
                annotations |= {id(x) for x in ast.walk(n.returns)}
            if isinstance(n, ast.AnnAssign):
                annotations |= {id(x) for x in ast.walk(n.annotation)}
        bad += [f"{path.name}:{n.lineno}: {n.id}" for n in ast.walk(fn)
                if isinstance(n, ast.Name) and n.id in typing_only and n.id not in local
                and id(n) not in annotations]
    return bad


def test_no_typing_only_import_is_used_at_run_time():
    files = sorted((ROOT / "experiments").rglob("*.py")) + sorted((ROOT / "traces").rglob("*.py"))
    files += sorted((ROOT / "placement").rglob("*.py")) + sorted((ROOT / "simulator").rglob("*.py"))
    assert [b for f in files for b in _typing_only_names_used_at_run_time(f)] == []
