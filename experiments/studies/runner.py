"""Run a study's cells (serially or on Dask) into a resumable, crash-safe run directory.

Layout of a run directory::

    study.json          the validated definition and its fingerprint (written first)
    cells/<cell_id>/    one finished cell: row.parquet + detail frames; a cell directory is
                        built as cells/.tmp-<cell_id>-* and renamed into place when complete,
                        so a cell directory either is complete or does not exist.  A cell that
                        failed (a solver that found no layout within its limit, ...) holds
                        its row (status "failed", the one-line reason in ``failure``) and a
                        FAILED marker; the other cells go on, and a re-run retries it
    results.parquet     one row per cell (grid order), with reductions vs. the baseline
    links.parquet, tokens.parquet, layers.parquet, expert_load.parquet, server_load.parquet
                        the detail frames of all cells, with a ``cell`` column
    meta.json           status, versions, cell counts
    inputs/             traces a built-in study imported for its cells (kept on --overwrite)
    COMPLETE            written last: every cell finished and the merged files are in place

Re-running on the same directory skips finished cells; killing the driver or a worker loses
at most the cells that were running.  A run directory holding a different study is refused
unless ``overwrite``.  An exclusive lock (``.lock``, released by the OS when the process dies)
keeps two drivers off one directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.dask_cluster import connect_scheduler, local_client
from experiments.outputs import COMPLETE_MARKER, STUDY_RUN_PRELUDE, write_json, write_parquet
from experiments.studies.cell import (
    TIMING_COLUMNS,
    CellFailure,
    CellResult,
    build_shared,
    evaluate_cell_or_failure,
    shared_key,
)
from experiments.studies.des_estimate import with_des_counts
from experiments.studies.merge import merge_run
from experiments.studies.spec import Cell, Study
from experiments.versions import versions
from traces.infra.atomic import atomic_write_text
from traces.infra.errors import InputError
from traces.infra.limits import OUT_DISK_FIX, check_disk, study_disk_bytes, study_time_line
from traces.infra.protected import check_writable

# Kept by --overwrite: the lock and the study's imported input traces (cells read them).
KEPT = STUDY_RUN_PRELUDE

Progress = Callable[[int, int, str], None]  # (cells done, cells total, last cell label)
FAILED_MARKER = "FAILED"  # in a failed cell's directory: its one-line reason


@dataclass(frozen=True)
class SweepOutcome:
    results: pd.DataFrame
    run_dir: Path
    cells_run: int
    cells_reused: int
    cells_failed: tuple[str, ...] = ()  # ids of the cells that failed (in results, "failed")


# ---------------------------------------------------------------------------------------------
# run directory


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{run_dir}: another sweep is running in this directory; wait for it or use"
                " another --out"
            ) from None
        yield
    finally:
        os.close(fd)


def _prepare(run_dir: Path, study: Study, overwrite: bool) -> None:
    record = run_dir / "study.json"
    if run_dir.exists() and not record.is_file():
        if any(p.name not in KEPT for p in run_dir.iterdir()):
            raise InputError(
                f"--out {run_dir}: exists and is not a study or sweep run directory (no"
                " study.json); --overwrite replaces only those; move it or choose another --out"
            )
    if record.is_file():
        try:
            old = json.loads(record.read_text()).get("fingerprint")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old = None
        if old != study.fingerprint():
            if not overwrite:
                raise InputError(
                    f"{run_dir}: holds the results of a different study (study.json differs);"
                    " pass --overwrite to start again or choose another --out"
                )
        elif not overwrite:
            return
    if run_dir.exists() and overwrite:
        check_writable(run_dir, "--out")
        for child in run_dir.iterdir():
            if child.name in KEPT:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


def _write_record(run_dir: Path, study: Study) -> None:
    write_json(run_dir / "study.json", {
        "name": study.name,
        "fingerprint": study.fingerprint(),
        "definition": study.definition,
        "axes": list(study.axes),
        "skipped": list(study.skipped),
        "cells": [
            {"index": c.index, "cell_id": c.cell_id,
             "axis_values": [[p, v] for p, v in c.axis_values]}
            for c in study.cells
        ],
    })


def _clean_partials(cells_dir: Path) -> None:
    for p in cells_dir.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def finished_cells(run_dir: Path) -> set[str]:
    d = run_dir / "cells"
    if not d.is_dir():
        return set()
    return {p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")}


def cells_to_run(run_dir: Path, study: Study, overwrite: bool) -> list[Cell]:
    """The cells a run of ``study`` in ``run_dir`` will compute: every cell with
    ``overwrite``, else those not finished and those that failed (they are retried)."""
    if overwrite:
        return list(study.cells)
    done = finished_cells(run_dir) - failed_cells(run_dir)
    return [c for c in study.cells if c.cell_id not in done]


def failed_cells(run_dir: Path) -> set[str]:
    """Cells of the run directory that failed (their directory holds the FAILED marker)."""
    return {c for c in finished_cells(run_dir)
            if (run_dir / "cells" / c / FAILED_MARKER).is_file()}


def write_cell(run_dir: Path, cell: Cell, result: CellResult | CellFailure) -> None:
    """Write one cell's frames into a temporary directory, then rename it into place."""
    cells_dir = run_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    final = cells_dir / cell.cell_id
    if final.is_dir():
        return  # already written (a task that ran twice gives identical frames)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cell.cell_id}-", dir=cells_dir))
    try:
        row = {"cell": cell.cell_id, "cell_index": cell.index}
        for path, value in cell.axis_values:
            row[path] = _column_value(value)
        row.update(result.row)
        write_parquet(tmp / "row.parquet", pd.DataFrame([row]))
        if isinstance(result, CellFailure):
            atomic_write_text(tmp / FAILED_MARKER, str(result.row["failure"]) + "\n")
        else:
            for name, frame in result.frames().items():
                write_parquet(tmp / f"{name}.parquet", frame)
        # the cell's full configuration, so reports can rebuild its cluster
        atomic_write_text(tmp / "config.json", json.dumps(cell.config, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _column_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


# ---------------------------------------------------------------------------------------------
# execution


OnResult = Callable[[Cell, CellResult | CellFailure], None]


def _run_serial(cells: list[Cell], on_result: OnResult) -> None:
    for cell in cells:
        on_result(cell, evaluate_cell_or_failure(cell.config))


def _run_dask(
    cells: list[Cell],
    on_result: OnResult,
    client: Any,
    workers: int,
) -> None:
    from dask.distributed import as_completed

    with ExitStack() as stack:
        if client is None:  # a client of the caller's scheduler is closed by the caller
            client = stack.enter_context(local_client(workers))
        shared = _submit_shared(client, cells)
        by_key = {}
        futures = []
        for cell in cells:
            fut = client.submit(evaluate_cell_or_failure, cell.config,
                                shared.get(_group(cell)), key=f"cell-{cell.cell_id}",
                                pure=False)
            by_key[fut.key] = cell
            futures.append(fut)
        for fut in as_completed(futures):
            result = fut.result()
            on_result(by_key[fut.key], result)
            fut.release()


def _group(cell: Cell) -> str | None:
    """The key of the cells that share inputs with ``cell`` (None: a rebalancing cell)."""
    return None if "rebalance" in cell.config else shared_key(cell.config)


def _submit_shared(client: Any, cells: list[Cell]) -> dict[str | None, Any]:
    """One task per group of two or more cells building their traces and ceilings once; the
    cells get its future, so Dask ships the result to whichever worker runs them."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        key = _group(cell)
        if key is not None:
            groups.setdefault(key, []).append(cell)
    return {
        key: client.submit(build_shared, members[0].config,
                           [c.config["strategy"] for c in members],
                           key=f"shared-{members[0].cell_id}", pure=False)
        for key, members in groups.items() if len(members) > 1
    }


def run_study(
    study: Study,
    run_dir: Path,
    *,
    serial: bool = False,
    scheduler: str | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: Progress = lambda done, total, label: None,
    note: Callable[[str], None] | None = None,
    command: str = "sweep",
) -> SweepOutcome:
    """Run every unfinished cell, then merge; safe to kill and re-run at any moment.  Before
    any work, the disk the cells still to run need is checked and, for a long run, their CPU
    time's order of magnitude is given to ``note`` (one line naming ``command``).  Without a
    ``note`` (``-q``) the DES cells are not counted: the count costs about as much CPU as the
    replays of a small grid, and nobody would read its line."""
    run_dir = Path(run_dir)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    check_writable(run_dir, "--out")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: exists and is not a directory; choose another --out")
    to_run = cells_to_run(run_dir, study, overwrite)
    works = [c.work for c in to_run]
    todo = with_des_counts([c.config for c in to_run], works) if note else works
    tokens = sum(w.replay_tokens for w in todo)
    check_disk(study_disk_bytes(todo, [c.work for c in study.cells]), run_dir,
               f"the {len(todo):,} cell{'s' * (len(todo) != 1)} to run ({tokens:,} replayed"
               " tokens)", OUT_DISK_FIX)
    if note and (line := study_time_line(command, "cell", todo)):
        note(line)
    # connect first: an unreachable scheduler leaves no run directory behind
    client = connect_scheduler(scheduler) if scheduler and not serial else None
    try:
        return _run_in(run_dir, study, serial, client, scheduler, workers, overwrite, progress)
    finally:
        if client is not None:
            client.close()


def _run_in(
    run_dir: Path, study: Study, serial: bool, client: Any, scheduler: str | None, workers: int,
    overwrite: bool, progress: Progress,
) -> SweepOutcome:
    created = not os.path.lexists(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_locked(run_dir, study, serial, client, scheduler, workers, overwrite,
                           progress)
    except BaseException:
        # stopped before its record (unwritable, Ctrl-C): a directory this run made holds
        # nothing to resume, so nothing is left behind
        if created and not (run_dir / "study.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_locked(
    run_dir: Path, study: Study, serial: bool, client: Any, scheduler: str | None, workers: int,
    overwrite: bool, progress: Progress,
) -> SweepOutcome:
    with _locked(run_dir):
        _prepare(run_dir, study, overwrite)
        if not (run_dir / "study.json").is_file():
            _write_record(run_dir, study)
        cells_dir = run_dir / "cells"
        cells_dir.mkdir(exist_ok=True)
        _clean_partials(cells_dir)
        retried = failed_cells(run_dir)  # a failure may not repeat (time limits, memory)
        for cell_id in retried:
            shutil.rmtree(cells_dir / cell_id)
        done = finished_cells(run_dir)
        todo = [c for c in study.cells if c.cell_id not in done]
        reused = len(study.cells) - len(todo)
        if todo:
            (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
            write_json(run_dir / "meta.json", _meta(study, "running", reused))
        count = [reused]
        total = len(study.cells)
        progress(count[0], total, "")

        def on_result(cell: Cell, result: CellResult | CellFailure) -> None:
            write_cell(run_dir, cell, result)
            count[0] += 1
            failed = isinstance(result, CellFailure)
            progress(count[0], total, _label(cell) + (
                f" FAILED: {result.row['failure']}" if failed else ""))

        t0 = time.perf_counter()
        if todo:
            try:
                if serial:
                    _run_serial(todo, on_result)
                else:
                    _run_dask(todo, on_result, client, workers)
            except BaseException as exc:  # the run stopped: never leave it marked "running"
                write_json(run_dir / "meta.json", {
                    **_meta(study, "stopped", reused),
                    "stopped_by": type(exc).__name__, "cells_finished": count[0]})
                raise
        results = merge_run(run_dir, study)
        failed = tuple(c.cell_id for c in study.cells if c.cell_id in failed_cells(run_dir))
        meta = _meta(study, "complete", reused)
        meta["cells_failed"] = list(failed)
        meta["wall_time_s"] = time.perf_counter() - t0
        meta["execution"] = "serial" if serial else (scheduler or f"local dask x{workers}")
        write_json(run_dir / "meta.json", meta)
        atomic_write_text(run_dir / COMPLETE_MARKER, "complete\n")
    return SweepOutcome(results, run_dir, len(todo), reused, failed)


def _label(cell: Cell) -> str:
    """Short progress label: leaf=value, tables by their preset or family."""
    parts = []
    for path, v in cell.axis_values:
        if isinstance(v, dict) and "preset" in v:
            parts.append(str(v["preset"]))
        elif isinstance(v, dict) and "family" in v:
            params = ",".join(f"{k}={x}" for k, x in sorted(v.get("params", {}).items()))
            parts.append(f"{v['family']}({params})")
        elif isinstance(v, dict) and (v.get("label") or "name" in v):
            parts.append(str(v.get("label") or v["name"]))
        elif isinstance(v, dict) and not v:
            parts.append(f"{path}=default")
        else:
            parts.append(f"{path.split('.')[-1]}={_column_value(v)}")
    return ", ".join(parts)


def _meta(study: Study, status: str, reused: int) -> dict[str, Any]:
    return {
        "command": "moe-netsim sweep",
        "study": study.name,
        "status": status,
        "cells": len(study.cells),
        "cells_reused_from_earlier_runs": reused,
        "skipped": list(study.skipped),
        "timing_columns": list(TIMING_COLUMNS),
        "versions": versions(),
    }
