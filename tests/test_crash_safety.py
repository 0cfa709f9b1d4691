"""Crash safety (everything but the sweep, which has its own kill-and-resume test).

* Every output file is written atomically (temporary file, fsync, rename): the helpers, the
  trace writer, cluster and layout files, and a source audit that finds any other write.
* Run directories appear under their final name only when complete (``COMPLETE`` marker); a
  ``moe-netsim demo`` killed with SIGKILL mid-run leaves nothing that looks complete.
* A solver stopped by its time limit never returns an unmarked answer.
"""

from __future__ import annotations

import ast
import os
import signal
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badinput import TINY, _cluster_dict, tiny_trace

from experiments.outputs import (
    COMPLETE_MARKER,
    atomic_write_text,
    is_complete,
    run_directory,
    save_figure,
    write_json,
    write_parquet,
)
from placement import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    SolverOutcome,
    SolveStatus,
    Termination,
    default_slots,
    solve_placement,
)
from placement.layout_io import load_layout, save_layout
from simulator.cluster.io import cluster_from_dict, load_cluster, save_cluster
from traces import TraceMeta
from traces.infra.atomic import current_umask
from traces.infra.errors import InputError
from traces.io import TraceWriter

ROOT = Path(__file__).resolve().parents[1]


def _names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)




# --- atomic files -----------------------------------------------------------------------------


def test_atomic_writers_leave_only_the_final_files_with_normal_permissions(tmp_path):
    import matplotlib.pyplot as plt

    write_parquet(tmp_path / "a.parquet", pd.DataFrame({"x": [1, 2]}))
    write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    atomic_write_text(tmp_path / "r.html", "<p>hi</p>")
    fig, _ = plt.subplots()
    save_figure(tmp_path / "f.png", fig)
    assert _names(tmp_path) == {"a.parquet", "m.json", "r.html", "f.png"}
    for p in tmp_path.iterdir():  # mkstemp makes 0600 files; outputs get the usual mode
        assert _mode(p) == 0o666 & ~current_umask(), p.name
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_parquet(tmp_path / "a.parquet")["x"].tolist() == [1, 2]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.parquet"
    write_parquet(target, pd.DataFrame({"x": [1]}))
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot serialise this
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises
        write_parquet(target, bad)
    assert _names(tmp_path) == {"a.parquet"}
    assert pd.read_parquet(target)["x"].tolist() == [1]


def test_trace_writer_failure_leaves_nothing(tmp_path):
    p = tmp_path / "t.parquet"
    with pytest.raises(InputError), TraceWriter(p, TraceMeta(model=TINY)) as w:
        w.write(tiny_trace())
        w.write(tiny_trace().take(slice(0, 2)).__class__(  # a block without origin_gpu
            meta=TraceMeta(model=TINY), experts=tiny_trace().experts,
            seq_id=np.arange(6), position=np.zeros(6, np.int32)))
    assert _names(tmp_path) == set()


def test_trace_writer_killed_mid_write_leaves_no_trace_file(tmp_path):
    """SIGKILL while a trace is being written: no file under the final name."""
    script = (
        "import sys, time\n"
        "from badinput import TINY, tiny_trace\n"
        "from traces import TraceMeta\n"
        "from traces.io import TraceWriter\n"
        f"with TraceWriter({str(tmp_path / 't.parquet')!r}, TraceMeta(model=TINY)) as w:\n"
        "    w.write(tiny_trace())\n"
        "    print('written', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (tmp_path / "t.parquet").exists()
    assert all(n.startswith(".t.parquet.") for n in _names(tmp_path))


def test_cluster_and_layout_files_are_written_atomically(tmp_path, monkeypatch):
    cluster = cluster_from_dict(_cluster_dict())
    save_cluster(cluster, tmp_path / "c.json")
    assert load_cluster(tmp_path / "c.json").links == cluster.links
    layout = ExpertLayout.from_primary(np.array([[0, 1, 2, 3]]), 4)
    save_layout(layout, tmp_path / "l.csv")
    save_layout(layout, tmp_path / "l.parquet")
    for name in ("l.csv", "l.parquet"):
        back = load_layout(tmp_path / name, 1, 4, 4)
        assert np.array_equal(back.expert_gpus, layout.expert_gpus)
    assert _names(tmp_path) == {"c.json", "l.csv", "l.parquet"}

    def half_then_fail(self, path, **kw):  # noqa: ANN001, ANN003, ANN202
        Path(path).write_text("layer,exp")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError):
        save_layout(layout, tmp_path / "l.csv")
    assert _names(tmp_path) == {"c.json", "l.csv", "l.parquet"}
    assert load_layout(tmp_path / "l.csv", 1, 4, 4).expert_gpus.shape == (1, 4, 1)


# --- run directories --------------------------------------------------------------------------


def test_run_directory_appears_only_when_complete(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), run_directory(out, overwrite=False) as work:
        write_json(work / "meta.json", {})
        assert not out.exists()
        raise RuntimeError("crash in the middle")
    assert _names(tmp_path) == set()
    with run_directory(out, overwrite=False) as work:
        write_json(work / "meta.json", {})
    assert is_complete(out) and _names(out) == {"meta.json", COMPLETE_MARKER}
    assert _mode(out) == 0o777 & ~current_umask()
    with pytest.raises(InputError, match="--overwrite"), run_directory(out, overwrite=False):
        pass
    with run_directory(out, overwrite=True) as work:
        atomic_write_text(work / "new.txt", "x")
    assert _names(out) == {"new.txt", COMPLETE_MARKER}
    assert _names(tmp_path) == {"run"}  # the old run was moved aside and removed


def test_stale_partial_directories_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    from experiments.outputs import _host

    stale = tmp_path / f".run.partial.{dead}-{_host()}.abc"
    stale.mkdir()
    alive = tmp_path / f".run.partial.{os.getpid()}-{_host()}.xyz"  # a run in progress: kept
    alive.mkdir()
    elsewhere = tmp_path / f".run.partial.{dead}-otherhost.q"  # maybe live on another machine
    elsewhere.mkdir()
    with run_directory(tmp_path / "run", overwrite=False):
        pass
    assert not stale.exists() and alive.exists() and elsewhere.exists()


def test_demo_killed_mid_run_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL `moe-netsim demo` while it places experts: no output under --out, no marker."""
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "demo", "--out", str(out), "--tokens", "64"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "placing experts with ilp" in line:  # mid-run: trace written, solving
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert any("placing experts" in s for s in seen), seen
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".demo.partial.") for p in leftovers), leftovers
    assert not any((p / COMPLETE_MARKER).exists() for p in leftovers)
    assert any((p / "trace_replay.parquet").exists() for p in leftovers)  # it was mid-run
    # the next run for the same --out clears the dead run's partial directory
    with run_directory(out, overwrite=False):
        pass
    assert _names(tmp_path) == {"demo"}


# --- source audit -----------------------------------------------------------------------------

_WRITERS = {"write_text", "write_bytes", "to_parquet", "to_csv", "to_json", "savefig",
            "ParquetWriter", "write_table", "dump"}


def _non_atomic_writes(path: Path) -> list[str]:
    """Calls that write a file but not to the ``tmp`` path of an atomic helper."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if not (isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax")):
                continue
        elif name not in _WRITERS:
            continue
        args = [*node.args, *(k.value for k in node.keywords)]
        target = f.value if isinstance(f, ast.Attribute) else None
        names = {a.id for a in [*args, target] if isinstance(a, ast.Name)}
        if name in ("to_csv", "to_json") and not args:
            continue  # returns a string
        if name == "write_table" and not (isinstance(target, ast.Name) and target.id == "pq"):
            continue  # ParquetWriter.write_table: the writer was opened on a tmp path
        if "tmp" not in names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_no_package_writes_a_file_non_atomically():
    """Writes go through traces.infra.atomic / experiments.outputs (to their ``tmp`` path) only."""
    bad = []
    for pkg in ("traces", "placement", "simulator", "experiments"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if p.name != "atomic.py":
                bad += _non_atomic_writes(p)
    assert not bad, "non-atomic writes (use traces.infra.atomic.atomic_output):\n" + "\n".join(bad)


# --- solver limits ----------------------------------------------------------------------------


def _problem(seed: int = 0) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    g, layers, experts = 64, 20, 64
    gs = np.repeat(np.arange(8), 8)
    d = (gs[:, None] != gs[None, :]) * rng.integers(1, 4, size=(g, g)).astype(float)
    d = (d + d.T) / 2
    act = rng.dirichlet(np.ones(experts), size=layers) * 6
    slots, per_layer = default_slots(layers, experts, g)
    return PlacementProblem(d, gs, act, slots, per_layer)


@pytest.mark.parametrize("strategy", ["ilp", "ilp-load"])
def test_time_limit_without_incumbent_is_no_solution_with_a_reason(strategy):
    res = solve_placement(_problem(), strategy, SolverOptions(time_limit_s=1e-9))
    assert res.status is SolveStatus.NO_SOLUTION
    assert res.layout is None and not res.is_ok
    assert "time" in res.message.lower() and "time_limit_s" in res.message
    assert res.gap == float("inf")
    assert res.solver is not None and res.solver.termination is Termination.TIME_LIMIT


def test_results_cannot_be_unmarked():
    """PlacementResult refuses a layout without a vouching status, a solver's layout without
    the solver's outcome, and an outcome that says something else."""
    layout = ExpertLayout.from_primary(np.zeros((1, 2), dtype=np.int64), 1)
    opts = SolverOptions()
    common = dict(strategy="x", objective=1.0, runtime_s=0.0, options=opts)
    bound = SolverOutcome.from_bound(1.0, 0.95)  # gap (1 - 0.95) / 1 = 0.05
    ok = PlacementResult(status=SolveStatus.FEASIBLE, layout=layout, solver=bound, **common)
    assert ok.is_ok and ok.gap == pytest.approx(0.05) and ok.dual_bound == 0.95
    with pytest.raises(ValueError, match="solver outcome"):
        PlacementResult(status=SolveStatus.FEASIBLE, layout=layout, **common)
    with pytest.raises(ValueError, match="outcome says optimal"):
        PlacementResult(status=SolveStatus.FEASIBLE, layout=layout,
                        solver=SolverOutcome.from_bound(1.0, 1.0), **common)
    with pytest.raises(ValueError, match="no layout"):
        PlacementResult(status=SolveStatus.FEASIBLE, layout=None, solver=bound, **common)
    for status in (SolveStatus.NO_SOLUTION, SolveStatus.INFEASIBLE, SolveStatus.ERROR):
        with pytest.raises(ValueError, match="with a layout"):
            PlacementResult(status=status, layout=layout, **common)


def test_a_timed_out_placement_stops_the_pipeline_with_the_reason():
    from experiments.pipeline import place_and_replay
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig

    routes = build_route_table(cluster_from_dict(_cluster_dict()))
    trace = tiny_trace()
    act = np.full((2, 8), 0.25)
    from experiments.pipeline import build_problem

    problem = build_problem(routes, TINY, act)
    with pytest.raises(InputError, match="no-solution.*time_limit_s"):
        place_and_replay(problem, "ilp-load", trace, routes, SimConfig(),
                         SolverOptions(time_limit_s=1e-9))


def test_time_limit_with_an_incumbent_reports_feasible_with_its_gap(monkeypatch):
    """The MIP fallback stopped by its time limit with an incumbent: a valid layout, status
    ``feasible``, HiGHS's gap, and a message that says so.  HiGHS is real; only what it
    reports is altered: the LP vertex is made fractional (the network-flow structure never
    gives one, so the fallback cannot be reached otherwise) and the MIP's status is set to
    the time limit with a 3% gap on top of its (real) incumbent."""
    from placement import assignment as assignment_module
    from placement import check_layout

    real = assignment_module.run_highs

    def run(model, options, integer=False, **kw):  # noqa: ANN001, ANN003, ANN202
        sol = real(model, options, integer=integer, **kw)
        if not integer:
            return replace(sol, x=0.5 * sol.x + 0.25)  # fractional, still "optimal"
        o = sol.outcome  # a bound 3% below the incumbent: gap (obj - 0.97 obj) / obj = 0.03
        return replace(sol, outcome=SolverOutcome.from_solver(
            Termination.TIME_LIMIT, "Time limit reached", o.objective, 0.97 * o.objective,
            has_solution=True))

    monkeypatch.setattr(assignment_module, "run_highs", run)
    problem = PlacementProblem(
        distance=np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]),
        gpu_server=np.arange(3),
        activation=np.array([[0.9, 0.6, 0.5], [0.2, 1.0, 0.8]]),
        slots_per_gpu=2,
        max_per_gpu_per_layer=1,
    )
    res = solve_placement(problem, "ilp-load", SolverOptions(time_limit_s=5))
    assert res.info["lp_integral"] is False
    assert res.status is SolveStatus.FEASIBLE and res.is_ok
    assert res.gap == pytest.approx(0.03)
    assert res.solver.termination is Termination.TIME_LIMIT
    assert "Time limit" in res.message and "gap 0.03" in res.message
    assert check_layout(problem, res.layout) == []
