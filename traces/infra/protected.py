"""The inputs of the running command, which no write may touch.

The rule (every command, every write): no output path may be one of the command's inputs or a
directory that contains one.  Paths are compared after resolving symlinks and relative parts,
and by inode, so a symlink or a hard link to an input counts as the input.  The command line
registers a command's inputs before it runs (:func:`protecting`); inputs found while reading
(trace files named in a study file, ``stats=FILE`` of a tenant) are added with :func:`protect`.
Every atomic file write, run-directory replacement and deletion checks :func:`check_writable`
first, so a command that forgets its own early check still cannot destroy an input.  With no
command running (library use) nothing is registered and nothing is checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from traces.infra.errors import InputError


@dataclass(frozen=True)
class ProtectedInput:
    label: str  # how the user named it: "--trace", "trace.source", "" for a positional argument
    given: str  # the path as the user wrote it
    resolved: Path
    inode: tuple[int, int] | None  # (st_dev, st_ino) when the path exists


_INPUTS: list[ProtectedInput] = []
_ACTIVE: list[bool] = []  # one entry per running command (nested only in tests)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def protect(label: str, path: str | os.PathLike[str]) -> None:
    """Add ``path`` to the inputs of the running command (no-op outside a command)."""
    if not _ACTIVE:
        return
    resolved = _resolve(path)
    if any(p.resolved == resolved for p in _INPUTS):
        return
    _INPUTS.append(ProtectedInput(label, str(path), resolved, _inode(resolved)))


@contextmanager
def protecting(inputs: Iterable[tuple[str, str | os.PathLike[str]]]) -> Iterator[None]:
    """Register ``(label, path)`` inputs for the duration of one command."""
    _ACTIVE.append(True)
    saved = list(_INPUTS)
    try:
        for label, path in inputs:
            protect(label, path)
        yield
    finally:
        _INPUTS[:] = saved
        _ACTIVE.pop()


def protected_inputs() -> tuple[ProtectedInput, ...]:
    return tuple(_INPUTS)


def clash(path: str | os.PathLike[str]) -> ProtectedInput | None:
    """The input that ``path`` is, or contains; ``None`` when writing ``path`` is safe."""
    target = _resolve(path)
    inode = _inode(target)
    for p in _INPUTS:
        if target == p.resolved or p.resolved.is_relative_to(target):
            return p
        if inode is not None and inode == p.inode:
            return p
    return None


def check_writable(path: str | os.PathLike[str], flag: str = "output") -> None:
    """Raise :class:`InputError` if writing, replacing or deleting ``path`` touches an input."""
    p = clash(path)
    if p is None:
        return
    if _resolve(path) == p.resolved or _inode(_resolve(path)) == p.inode:
        relation = "is"
    else:
        relation = "contains"
    named = f"{p.label} {p.given}" if p.label else p.given
    raise InputError(
        f"{flag} {path}: {relation} the input {named}; this command never writes"
        " to, replaces or deletes its inputs; choose another output path"
    )
