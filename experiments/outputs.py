"""Crash-safe outputs: atomic file writes and run directories that record completion.

Every file goes through :func:`traces.infra.atomic.atomic_output` (temporary file, fsync, rename).
A run directory is built as a hidden ``.<name>.partial.<pid>.<random>`` sibling and renamed
into place only after its ``COMPLETE`` marker is written, so a directory under the final name
is always complete; a killed run leaves at most a hidden partial directory without the marker,
which the next run for the same path on the same host removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from traces.infra.atomic import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
)
from traces.infra.errors import InputError

COMPLETE_MARKER = "COMPLETE"

__all__ = [
    "COMPLETE_MARKER",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_complete",
    "run_directory",
    "save_figure",
    "write_json",
    "write_parquet",
]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write a frame as Parquet through a temporary file."""
    with atomic_output(path) as tmp:
        df.to_parquet(tmp, index=False)


def save_figure(path: Path, fig: Any) -> None:
    """Save a matplotlib figure atomically (format by the path's suffix)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def is_complete(path: Path) -> bool:
    """True when ``path`` is a run directory whose run finished (it holds the marker)."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(path: Path) -> None:
    """Remove ``.<name>.partial.<pid>.*`` siblings left by runs whose process is gone."""
    prefix = f".{path.name}.partial."
    for d in path.parent.iterdir():
        if not d.name.startswith(prefix):
            continue
        pid, _, host = d.name[len(prefix):].split(".", 1)[0].partition("-")
        # Only runs of this host: a shared file system may hold live runs of other machines.
        if d.is_dir() and host == _host() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


@contextmanager
def run_directory(path: Path, overwrite: bool) -> Iterator[Path]:
    """Build a run directory beside its final place and move it there only when complete.

    The final directory holds a ``COMPLETE`` marker.  An existing directory is refused unless
    ``overwrite``; on any error the half-built directory is removed, so nothing half-written is
    left where the user looks.  With ``overwrite`` the old directory is first renamed aside
    (one atomic step) and deleted only after the new one is in place, so a crash never leaves
    a half-deleted old run that still looks complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(
            f"{path}: output directory exists; pass --overwrite to replace it or choose"
            " another --out"
        )
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(path)
        work = Path(
            tempfile.mkdtemp(
                prefix=f".{path.name}.partial.{os.getpid()}-{_host()}.", dir=path.parent
            )
        )
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists()), None)
        reason = (
            f"{blocker} is a file, not a directory"
            if blocker is not None and not blocker.is_dir()
            else exc.strerror or str(exc)
        )
        raise InputError(
            f"{path}: cannot create the output directory ({reason}); choose another --out"
        ) from None
    try:
        os.chmod(work, 0o777 & ~current_umask())
        yield work
        atomic_write_text(work / COMPLETE_MARKER, "complete\n")
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(work, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(work, path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


