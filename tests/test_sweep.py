"""Sweeps: Dask equals serial, resume after an interruption, SIGKILL of the driver or a worker.

Dask runs on loopback only (a LocalCluster bound to 127.0.0.1) with two single-threaded worker
processes; every subprocess is started in its own session and killed by id if a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from experiments.studies import TIMING_COLUMNS, load_study_file, run_study
from experiments.studies.merge import DETAIL_FRAMES
from experiments.studies.runner import finished_cells
from traces.infra.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
seed = 0
[study]
name = "tiny sweep"
[model]
name = "tiny-moe"
moe_layer_indices = [1, 2, 3]
num_routed_experts = 8
num_shared_experts = 1
top_k = 2
hidden_size = 256
[topology]
family = "fat-tree"
params = {{ k = 4, num_servers = 5 }}
links = {{ gpus_per_server = 2 }}
[trace]
fit_tokens = 128
replay_tokens = 128
zipf_exponent = 1.2
[sim]
microbatch_tokens = 64
[axes]
"strategy.name" = ["round-robin", "ilp", "ilp-load"]
"topology.links.nic_bandwidth_bytes_per_s" = [50e9, 10e9]
"seed" = {seeds}
"""


def study_file(tmp_path: Path, seeds: int = 2) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY.format(seeds=list(range(seeds))))
    return p


def results_without_timing(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet").drop(columns=list(TIMING_COLUMNS))


def assert_same_run(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(results_without_timing(a), results_without_timing(b))
    for name in DETAIL_FRAMES:
        assert (a / f"{name}.parquet").is_file() == (b / f"{name}.parquet").is_file()
        if name == "timeline" and not (a / f"{name}.parquet").is_file():
            continue  # only sweeps of rebalancing cells have timelines
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"),
                                      pd.read_parquet(b / f"{name}.parquet"))


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory) -> tuple[Path, Path]:
    """The uninterrupted serial reference run of the 12-cell study."""
    d = tmp_path_factory.mktemp("serial")
    f = study_file(d)
    run_study(load_study_file(f), d / "run", serial=True)
    return f, d / "run"


def test_serial_run_is_complete(serial_run):
    _, run = serial_run
    res = pd.read_parquet(run / "results.parquet")
    assert len(res) == 12 and (run / "COMPLETE").is_file()
    assert list(res["cell_index"]) == list(range(12))
    assert set(res["status"]) <= {"optimal", "heuristic"}
    # every ilp-load cell has a round-robin row of the same bandwidth and seed to compare with
    assert res["hops_per_token_reduction_pct"].notna().all()
    assert (res.loc[res["strategy"] == "round-robin", "hops_per_token_reduction_pct"] == 0).all()


def _traces_generated(scheduler: str) -> int:
    """Synthetic traces generated so far by all workers of the cluster (their cache misses)."""
    from dask.distributed import Client

    def misses() -> int:
        from experiments.studies.cell import _synthetic

        return _synthetic.cache_info().misses

    with Client(scheduler) as client:
        return sum(client.run(misses).values())


def test_dask_on_an_existing_cluster_equals_serial_even_when_a_worker_dies(serial_run, tmp_path):
    from dask.distributed import Client

    from experiments.dask_cluster import local_cluster

    f, reference = serial_run
    with local_cluster(2) as cluster:
        out = run_study(load_study_file(f), tmp_path / "dask", scheduler=cluster.scheduler_address)
        assert out.cells_run == 12
        assert_same_run(reference, tmp_path / "dask")
        # three new seeds x 3 strategies: each seed's trace is generated once in the whole
        # cluster and shipped to the cells, not once per worker that runs one of its cells
        made = _traces_generated(cluster.scheduler_address)
        seeds = tmp_path / "seeds.toml"
        seeds.write_text(STUDY.format(seeds=[2, 3, 4]).replace(
            '"topology.links.nic_bandwidth_bytes_per_s" = [50e9, 10e9]\n', ""))
        out = run_study(load_study_file(seeds), tmp_path / "seeds",
                        scheduler=cluster.scheduler_address)
        assert out.cells_run == 9
        assert _traces_generated(cluster.scheduler_address) - made == 3

        # SIGKILL one worker as soon as the first cell is back: Dask reruns its task
        # elsewhere (the nanny restarts the worker); nothing is lost or written twice
        with Client(cluster.scheduler_address) as client:
            pids = sorted(client.run(os.getpid).values())
        killed = []

        def kill_a_worker(done: int, total: int, label: str) -> None:
            if done == 1 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        out = run_study(load_study_file(f), tmp_path / "killed",
                        scheduler=cluster.scheduler_address, progress=kill_a_worker)
        assert killed and out.cells_run == 12
        assert len(finished_cells(tmp_path / "killed")) == 12
        assert_same_run(reference, tmp_path / "killed")


def test_resume_runs_only_what_is_missing(serial_run, tmp_path):
    f, reference = serial_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    # an interrupted run: three cells never finished, one was half written, no merge yet
    cells = sorted(finished_cells(run))
    for c in cells[3:6]:
        shutil.rmtree(run / "cells" / c)
    (run / "cells" / f".tmp-{cells[4]}-abc").mkdir()
    for name in ("results.parquet", "COMPLETE"):
        (run / name).unlink()
    seen = []
    out = run_study(load_study_file(f), run, serial=True,
                    progress=lambda done, total, label: seen.append(done))
    assert (out.cells_run, out.cells_reused) == (3, 9)
    assert seen == [9, 10, 11, 12]
    assert not list((run / "cells").glob(".tmp-*"))
    assert_same_run(reference, run)
    # a finished run re-run does nothing; a different study in the directory is refused
    assert run_study(load_study_file(f), run, serial=True).cells_run == 0
    other = study_file(tmp_path, seeds=1)
    with pytest.raises(InputError, match="different study"):
        run_study(load_study_file(other), run, serial=True)


def _sweep_process(study: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", "sweep", str(study), "--out", str(out),
         "--no-report", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def _wait_for_cells(out: Path, proc: subprocess.Popen, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(finished_cells(out)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("no cell finished in time")
        time.sleep(0.02)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _reap(procs: list[psutil.Process], timeout_s: float = 60) -> list[psutil.Process]:
    """Wait for processes to end; kill (by id) and return those still alive."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        p.kill()
    return alive


def test_sigkill_of_the_driver_then_rerun_gives_the_uninterrupted_results(serial_run, tmp_path):
    f, reference = serial_run
    out = tmp_path / "run"
    proc = _sweep_process(f, out, "--workers", "2")
    children: list[psutil.Process] = []
    try:
        _wait_for_cells(out, proc, 1)
        children = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done_at_kill = finished_cells(out)
        assert 1 <= len(done_at_kill) < 12 and not (out / "COMPLETE").exists()
        # the workers notice their parent is gone and exit: nothing leaks
        assert _reap(children) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _reap(children, timeout_s=1)
    outcome = run_study(load_study_file(f), out, serial=True)
    assert outcome.cells_run == 12 - len(done_at_kill)
    assert finished_cells(out) >= done_at_kill
    assert_same_run(reference, out)
