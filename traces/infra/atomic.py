"""Atomic file output shared by every package: write a temporary file, then rename it.

A reader (or a crash) never sees a half-written file under the final name: the data goes to a
hidden temporary file in the same directory, is flushed to disk, gets the permissions a plain
``open(path, "w")`` would give (``mkstemp`` makes 0600 files), and is renamed over ``path``.
On any error the temporary file is removed.  A path that is, or contains, an input of the
running command is refused before anything is written (:mod:`traces.infra.protected`).  It
lives in ``traces`` because that is the bottom layer every package may import
(``experiments.outputs`` builds on it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from traces.infra.protected import check_writable


def current_umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The open :func:`all_or_none` groups: (temporary, final) pairs waiting for their rename.
_GROUPS: list[list[tuple[Path, Path, list[Path]]]] = []


@contextmanager
def all_or_none() -> Iterator[None]:
    """Several outputs of one command (a layout and its engine files): every
    :func:`atomic_output` inside is renamed into place only when all of them are written, so
    an error in the last one leaves none of them behind."""
    group: list[tuple[Path, Path, list[Path]]] = []
    _GROUPS.append(group)
    try:
        yield
    except BaseException:
        _discard(group)
        raise
    finally:
        _GROUPS.remove(group)
    for i, (tmp, final, _) in enumerate(group):
        try:
            os.replace(tmp, final)
        except OSError as exc:
            _discard(group[i:])
            raise naming_user_path(exc, tmp, final) from None


def _discard(group: list[tuple[Path, Path, list[Path]]]) -> None:
    for tmp, _, made in reversed(group):
        tmp.unlink(missing_ok=True)
        _remove_empty(made)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    >>> # with atomic_output("out.parquet") as tmp: df.to_parquet(tmp)
    """
    final = Path(path)
    check_writable(final)
    made = [p for p in (final.parent, *final.parent.parents) if not os.path.lexists(p)]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name keeps the final suffix (matplotlib picks the format from it).
        fd, name = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent
        )
    except OSError as exc:  # a read-only or missing directory: about the user's path
        _remove_empty(made)
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        _fsync(tmp)
        if _GROUPS:
            _GROUPS[-1].append((tmp, final, made))  # renamed when the whole group is written
            return
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _remove_empty(made)
        raise naming_user_path(exc, tmp, final) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(made)
        raise


def _remove_empty(made: list[Path]) -> None:
    """Remove the directories an output created for itself (innermost first), if empty."""
    for d in made:
        try:
            d.rmdir()
        except OSError:
            return


def naming_user_path(exc: OSError, hidden: Path, final: Path) -> OSError:
    """``exc`` about the hidden temporary ``hidden`` (or about no file) as one about ``final``.

    A disk-full or read-only error must name the path the user chose, not the temporary file
    or directory it was being built in; errors about other files keep their own name.
    """
    name = str(exc.filename) if exc.filename is not None else None
    if name is not None and not name.startswith(str(hidden)):
        return exc
    user = str(final) + (name[len(str(hidden)):] if name is not None else "")
    text = (exc.strerror or str(exc)).replace(str(hidden), str(final))
    return OSError(exc.errno, text, user)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
