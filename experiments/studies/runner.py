"""Run a study's cells (serially or on Dask) into a resumable, crash-safe run directory.

Layout of a run directory::

    study.json          the validated definition and its fingerprint (written first)
    cells/<cell_id>/    one finished cell: row.parquet + detail frames; a cell directory is
                        built as cells/.tmp-<cell_id>-* and renamed into place when complete,
                        so a cell directory either is complete or does not exist
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

import numpy as np
import pandas as pd

from experiments.dask_cluster import connect_scheduler, local_client
from experiments.outputs import COMPLETE_MARKER, write_json, write_parquet
from experiments.studies.cell import TIMING_COLUMNS, CellResult, evaluate_cell
from experiments.studies.spec import Cell, Study
from experiments.versions import versions
from traces.infra.atomic import atomic_write_text
from traces.infra.errors import InputError
from traces.infra.protected import check_writable

DETAIL_FRAMES = ("links", "tokens", "layers", "expert_load", "server_load", "utilisation")
METRICS_REDUCED = ("hops_per_token", "remote_copies_per_token_layer", "network_link_bytes",
                   "max_link_utilisation", "latency_p50_ms", "latency_p99_ms", "makespan_ms")

# Kept by --overwrite: the lock and the study's imported input traces (cells read them).
KEPT = (".lock", "inputs")

Progress = Callable[[int, int, str], None]  # (cells done, cells total, last cell label)


@dataclass(frozen=True)
class SweepOutcome:
    results: pd.DataFrame
    run_dir: Path
    cells_run: int
    cells_reused: int


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


def write_cell(run_dir: Path, cell: Cell, result: CellResult) -> None:
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


def _run_serial(cells: list[Cell], on_result: Callable[[Cell, CellResult], None]) -> None:
    for cell in cells:
        on_result(cell, evaluate_cell(cell.config))


def _run_dask(
    cells: list[Cell],
    on_result: Callable[[Cell, CellResult], None],
    client: Any,
    workers: int,
) -> None:
    from dask.distributed import as_completed

    with ExitStack() as stack:
        if client is None:  # a client of the caller's scheduler is closed by the caller
            client = stack.enter_context(local_client(workers))
        by_key = {}
        futures = []
        for cell in cells:
            fut = client.submit(evaluate_cell, cell.config, key=f"cell-{cell.cell_id}",
                                pure=False)
            by_key[fut.key] = cell
            futures.append(fut)
        for fut in as_completed(futures):
            result = fut.result()
            on_result(by_key[fut.key], result)
            fut.release()


def run_study(
    study: Study,
    run_dir: Path,
    *,
    serial: bool = False,
    scheduler: str | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: Progress = lambda done, total, label: None,
) -> SweepOutcome:
    """Run every unfinished cell, then merge; safe to kill and re-run at any moment."""
    run_dir = Path(run_dir)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    check_writable(run_dir, "--out")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: exists and is not a directory; choose another --out")
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
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        _prepare(run_dir, study, overwrite)
        if not (run_dir / "study.json").is_file():
            _write_record(run_dir, study)
        cells_dir = run_dir / "cells"
        cells_dir.mkdir(exist_ok=True)
        _clean_partials(cells_dir)
        done = finished_cells(run_dir)
        todo = [c for c in study.cells if c.cell_id not in done]
        reused = len(study.cells) - len(todo)
        if todo:
            (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
            write_json(run_dir / "meta.json", _meta(study, "running", reused))
        count = [reused]
        total = len(study.cells)
        progress(count[0], total, "")

        def on_result(cell: Cell, result: CellResult) -> None:
            write_cell(run_dir, cell, result)
            count[0] += 1
            progress(count[0], total, _label(cell))

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
        meta = _meta(study, "complete", reused)
        meta["wall_time_s"] = time.perf_counter() - t0
        meta["execution"] = "serial" if serial else (scheduler or f"local dask x{workers}")
        write_json(run_dir / "meta.json", meta)
        atomic_write_text(run_dir / COMPLETE_MARKER, "complete\n")
    return SweepOutcome(results, run_dir, len(todo), reused)


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


# ---------------------------------------------------------------------------------------------
# merge


def add_reductions(results: pd.DataFrame, axes: tuple[str, ...], baseline: str) -> pd.DataFrame:
    """``<metric>_reduction_pct`` = 100 (1 - metric / metric of the baseline placer).

    The baseline row of a cell is the one that agrees on every axis except the placer's
    (``placer.*``); NaN where the grid has no such row.
    """
    df = results.copy()
    metrics = [m for m in METRICS_REDUCED if m in df.columns]  # runs from before a metric
    group = [a for a in axes if not a.startswith("placer") and a in df.columns]
    base = df[df["placer"] == baseline]
    if group:
        base = base.drop_duplicates(subset=group)
        merged = df[group].merge(base[group + metrics], on=group, how="left",
                                 suffixes=("", "_base"))
    else:
        merged = pd.DataFrame(
            {m: np.repeat(base[m].iloc[0] if len(base) else np.nan, len(df)) for m in metrics}
        )

    def reduction(v: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, 100.0 * (1.0 - v / b), np.where(v == b, 0.0, np.nan))

    for m in metrics:
        b = merged[m].to_numpy(dtype=float)
        df[f"{m}_reduction_pct"] = reduction(df[m].to_numpy(dtype=float), b)
    if "ceiling_hops_per_token" in df:  # the most any layout of the cell could save
        b = merged["hops_per_token"].to_numpy(dtype=float)
        df["hops_ceiling_pct"] = reduction(df["ceiling_hops_per_token"].to_numpy(float), b)
    return df


def merge_run(run_dir: Path, study: Study) -> pd.DataFrame:
    """Concatenate the finished cells in grid order into the run's Parquet tables."""
    cells_dir = run_dir / "cells"
    missing = [c.cell_id for c in study.cells if not (cells_dir / c.cell_id).is_dir()]
    if missing:
        raise RuntimeError(f"cells not finished: {missing[:5]}")
    rows = [pd.read_parquet(cells_dir / c.cell_id / "row.parquet") for c in study.cells]
    results = pd.concat(rows, ignore_index=True)
    results = add_reductions(results, study.axes, study.baseline)
    write_parquet(run_dir / "results.parquet", results)
    for name in DETAIL_FRAMES:
        parts = []
        for c in study.cells:
            f = cells_dir / c.cell_id / f"{name}.parquet"
            if f.is_file():  # cells finished by an older version may lack a frame
                parts.append(pd.read_parquet(f).assign(cell=c.cell_id))
        if parts:
            write_parquet(run_dir / f"{name}.parquet", pd.concat(parts, ignore_index=True))
    return results


def load_results(run_dir: Path) -> pd.DataFrame:
    p = Path(run_dir) / "results.parquet"
    if not p.is_file():
        raise InputError(f"{run_dir}: no results.parquet (not a finished sweep or study run)")
    return pd.read_parquet(p)
