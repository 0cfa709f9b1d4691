"""Crash-safe outputs: atomic file writes, run directories that record completion, and the
one rule every command's outputs obey.

The rule: no command writes to, replaces or deletes a path that is one of its inputs or a
directory containing one (:mod:`traces.infra.protected`, checked by every write), and
``--overwrite`` replaces only what a command of the same kind wrote before: a run directory
with its ``COMPLETE`` marker and ``meta.json`` naming the same command, or a file of the
command's own type (:class:`OutputKind`).  Commands declare their outputs with
:func:`add_output_argument`; the command line checks them all (:func:`claim_outputs`) before
any work starts.

Every file goes through :func:`traces.infra.atomic.atomic_output` (temporary file, fsync, rename).
A run directory is built as a hidden ``.<name>.partial.<pid>.<random>`` sibling and renamed
into place only after its ``COMPLETE`` marker is written, so a directory under the final name
is always complete; a killed run leaves at most a hidden partial directory without the marker,
which the next run for the same path on the same host removes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traces.infra.atomic import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
    naming_user_path,
)
from traces.infra.errors import InputError
from traces.infra.protected import check_writable

if TYPE_CHECKING:
    import pandas as pd

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
    check_writable(path, "--out")
    if path.exists() and not overwrite:
        raise InputError(
            f"{path}: output directory exists; pass --overwrite to replace it or choose"
            " another --out"
        )
    if path.exists() and not is_complete(path):
        raise InputError(
            f"--out {path}: exists and is not a finished moe-netsim run directory (no"
            f" {COMPLETE_MARKER} marker); --overwrite replaces only those; move it or choose"
            " another --out"
        )
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
            f"--out {path}: cannot create the output directory ({reason}); choose another --out"
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
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise naming_user_path(exc, work, path) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# The outputs a command declares, and what --overwrite may replace


@dataclass(frozen=True)
class OutputKind:
    """What a command writes under one output flag, and how to recognise it on disk."""

    what: str  # "a layout table written by `moe-netsim place`" (used in messages)
    is_own: Any  # Callable[[Path], bool]: True when the existing path is of this kind
    # an existing directory of this kind is resumed without --overwrite (study, sweep)
    resumable: bool = False
    # further files written beside the output: path -> (suffix, kind), e.g. place's .meta.json
    siblings: tuple[tuple[str, OutputKind], ...] = field(default=())


def _read_head(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _parquet_schema(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except Exception:  # noqa: BLE001 - any reader failure: not a Parquet file of ours
        return None


def _has_metadata_key(path: Path, *keys: bytes) -> bool:
    schema = _parquet_schema(path) if path.is_file() else None
    return schema is not None and any(k in (schema.metadata or {}) for k in keys)


def _is_trace_file(path: Path) -> bool:
    return _has_metadata_key(path, b"moe_netsim.trace")


def _is_trace_or_load_stats(path: Path) -> bool:
    return _has_metadata_key(path, b"moe_netsim.trace", b"moe_netsim.load_stats")


def _is_layout_table(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix == ".csv":
        header = _read_head(path, 1024).split(b"\n", 1)[0].decode("utf-8", "replace")
        columns = {c.strip() for c in header.split(",")}
    else:
        schema = _parquet_schema(path)
        columns = set(schema.names) if schema is not None else set()
    return {"layer", "expert", "gpu"} <= columns


def _is_json_of_command(command: str) -> Any:
    def check(path: Path) -> bool:
        obj = _json_object(path) if path.is_file() else None
        return obj is not None and obj.get("command") == command

    return check


def _is_sglang_map(path: Path) -> bool:
    obj = _json_object(path) if path.is_file() else None
    return obj is not None and set(obj) == {"physical_to_logical_map"}


def _is_trtllm_yaml(path: Path) -> bool:
    text = _read_head(path, 1 << 24) if path.is_file() else b""  # keys sorted: slots come last
    return text.startswith(b"initial_global_assignments:") and b"\nnum_slots:" in text


def _is_engine_export(path: Path) -> bool:
    """A folder or file ``trace export`` writes (a marked folder, or one of its file types)."""
    if path.is_dir():
        return is_complete(path)
    head = _read_head(path)
    if path.suffix == ".npz":
        return head.startswith(b"PK")
    if path.suffix == ".jsonl":
        first = head.split(b"\n", 1)[0]
        return first.startswith(b"{") and b"routed_experts" in first
    if path.suffix == ".json":
        obj = _json_object(path)
        return obj is not None and "logical_count" in obj
    schema = _parquet_schema(path) if path.suffix == ".parquet" else None
    return schema is not None and "topk_indices" in schema.names


def _is_cluster_file(path: Path) -> bool:
    from simulator.cluster.io import load_cluster

    try:
        load_cluster(path)
    except (InputError, OSError):
        return False
    return True


def _is_matplotlib_png(path: Path) -> bool:
    head = _read_head(path)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in head


def _is_run_of(command: str) -> Any:
    meta_of = _is_json_of_command(command)

    def check(path: Path) -> bool:
        return path.is_dir() and is_complete(path) and meta_of(path / "meta.json")

    return check


# What a study run directory holds before its study.json: the lock and the traces a built-in
# study imports for its cells (``inputs/``, kept on --overwrite).
STUDY_RUN_PRELUDE = (".lock", "inputs")


def _is_study_run(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / "study.json").is_file():
        return True
    names = {p.name for p in path.iterdir()}  # a run stopped before its record was written
    return bool(names) and names <= set(STUDY_RUN_PRELUDE) and (path / "inputs").is_dir()


def run_directory_kind(command: str) -> OutputKind:
    """A run directory of ``moe-netsim COMMAND`` (its marker and meta.json say so)."""
    return OutputKind(f"a finished run directory of moe-netsim {command}", _is_run_of(
        f"moe-netsim {command}"))


STUDY_RUN = OutputKind("a study or sweep run directory (with study.json)", _is_study_run,
                       resumable=True)
TRACE_FILE = OutputKind("a moe-netsim trace file", _is_trace_file)
TRACE_OR_LOAD_STATS = OutputKind(
    "a moe-netsim trace or load-statistics file", _is_trace_or_load_stats
)
CLUSTER_FILE = OutputKind("a moe-netsim cluster file", _is_cluster_file)
FIGURE_PNG = OutputKind("a PNG drawn by moe-netsim (matplotlib)", _is_matplotlib_png)
SGLANG_MAP = OutputKind("an SGLang expert-location JSON", _is_sglang_map)
ENGINE_EXPORT = OutputKind("an engine-format export written by moe-netsim trace export",
                           _is_engine_export)
TRTLLM_YAML = OutputKind("a TensorRT-LLM moe_load_balancer YAML", _is_trtllm_yaml)
LAYOUT_TABLE = OutputKind(
    "a layout table (columns layer, expert, gpu)", _is_layout_table,
    siblings=((".meta.json", OutputKind(
        "the .meta.json of a moe-netsim place layout",
        _is_json_of_command("moe-netsim place"))),),
)


def add_output_argument(
    parser: argparse.ArgumentParser, flag: str, kind: OutputKind, **kwargs: Any
) -> None:
    """``parser.add_argument(flag, type=Path, ...)`` and record what it writes."""
    action = parser.add_argument(flag, type=Path, **kwargs)
    declared = dict(parser.get_default("output_kinds") or {})
    declared[action.dest] = (flag, kind)
    parser.set_defaults(output_kinds=declared)


def leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                ) -> argparse.ArgumentParser:
    """The (sub)parser that parsed the command's own arguments."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser
        parser = subs[0].choices[getattr(args, subs[0].dest)]


def command_inputs(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[tuple[str, Path]]:
    """Every path argument that is not a declared output, with the flag that named it.

    A string option naming an existing file counts too (``--model FILE.json``).
    """
    outputs = args.output_kinds if hasattr(args, "output_kinds") else {}
    found: list[tuple[str, Path]] = []
    for action in leaf_parser(parser, args)._actions:
        if action.dest in outputs or action.dest in ("help", "output_kinds", "func"):
            continue
        # A positional argument has no flag: the path the user typed is its name.
        label = action.option_strings[0] if action.option_strings else ""
        value = getattr(args, action.dest, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, Path):
                found.append((label, v))
            elif isinstance(v, str) and v and os.path.lexists(v):
                found.append((label, Path(v)))
    return found


def claim_output(path: Path, kind: OutputKind, overwrite: bool, flag: str) -> None:
    """Refuse ``path`` unless it is free, or ``overwrite`` and it holds this kind of output."""
    check_writable(path, flag)
    if not os.path.lexists(path):
        return
    if kind.resumable and not overwrite and (kind.is_own(path) or (
            path.is_dir() and not any(p.name != ".lock" for p in path.iterdir()))):
        return  # resumed (or an empty directory filled)
    if not overwrite:
        raise InputError(f"{flag} {path}: exists; pass --overwrite to replace it or choose"
                         f" another {flag}")
    if not kind.is_own(path):
        raise InputError(
            f"{flag} {path}: exists and is not {kind.what}; --overwrite replaces only that;"
            f" move it or choose another {flag}"
        )


def claim_outputs(args: argparse.Namespace) -> None:
    """Check every declared output of the parsed command before it runs (module docstring)."""
    overwrite = bool(getattr(args, "overwrite", False))
    outputs: list[tuple[str, Path, OutputKind]] = []
    for dest, (flag, kind) in getattr(args, "output_kinds", {}).items():
        path = getattr(args, dest, None)
        if path is None:
            continue
        outputs.append((flag, path, kind))
        named = Path(os.path.abspath(path))  # "." and ".." have no name of their own
        for suffix, sibling in kind.siblings if named.name else ():
            outputs.append((flag, named.with_name(named.name + suffix), sibling))
    for i, (flag, path, kind) in enumerate(outputs):
        for other_flag, other, _ in outputs[:i]:
            a, b = Path(os.path.abspath(path)).resolve(), Path(os.path.abspath(other)).resolve()
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise InputError(f"{flag} {path} and {other_flag} {other}: two outputs on one"
                                 " path; choose different paths")
        claim_output(path, kind, overwrite, flag)


def flag_naming(
    filename: str | os.PathLike[str], parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[str, Path] | None:
    """The flag (and the path it was given) that ``filename`` is or lies under, if any.

    An operating-system error (read-only, disk full, permission) then names the user's flag and
    path, as every other error does.
    """
    named = [(flag, getattr(args, dest)) for dest, (flag, _) in
             getattr(args, "output_kinds", {}).items() if getattr(args, dest, None) is not None]
    target = Path(os.path.abspath(filename))
    for flag, path in [*named, *command_inputs(parser, args)]:
        if target == Path(os.path.abspath(path)) or target.is_relative_to(os.path.abspath(path)):
            return flag, path
    return None
