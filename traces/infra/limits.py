"""Sizes checked before work: exact integer byte counts and memory or disk estimates.

Byte counts (copies x bytes per copy, tokens x layers x bytes) are multiplied as Python
integers, which cannot overflow, and refused when they would not fit the int64 columns the
results are written in (:func:`exact_int64`).  A command that is about to allocate or write
something whose size follows from the user's numbers estimates it first and refuses, with the
estimate, what cannot fit this machine's memory (:func:`check_memory`) or the output's disk
(:func:`check_disk`): one line, exit 2, before anything is allocated or written.  Estimates
are lower bounds (the arrays' own bytes, the fewest bytes a row can take on disk), so a refusal
is never wrong; what passes may still be slow.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from traces.infra.errors import InputError

INT64_MAX = 2**63 - 1
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; sizes beyond EiB stay in EiB."""
    if n < 1024:
        return f"{int(n)} B"
    power = min(int(math.log(n, 1024)), len(_UNITS) - 1)
    return f"{n / 1024**power:.1f} {_UNITS[power]}"


def exact_int64(value: int, what: str, fix: str) -> int:
    """``value`` (an exact Python int) if an int64 holds it, else InputError naming ``what``."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise InputError(
            f"{what}: {value:.3e} bytes is beyond the 2^63-1 that a byte count holds; {fix}"
        )
    return value


def memory_bytes() -> int:
    """This machine's physical memory (what no allocation can exceed)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX: never refuse on a guess
        return INT64_MAX


def check_memory(need_bytes: int, what: str, fix: str) -> None:
    """Refuse ``what`` (one line with the estimate) when it needs more than this machine's
    memory."""
    have = memory_bytes()
    if need_bytes > have:
        raise InputError(
            f"{what} needs at least {human_bytes(need_bytes)} of memory, more than this machine's"
            f" {human_bytes(have)}; {fix}"
        )


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that would hold ``path`` (its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return INT64_MAX


def check_disk(need_bytes: int, path: Path, what: str, fix: str) -> None:
    """Refuse ``what`` when its output at ``path`` needs more than the free disk there."""
    have = free_disk_bytes(path)
    if need_bytes > have:
        raise InputError(
            f"{what} needs at least {human_bytes(need_bytes)} of disk at {path}, more than the"
            f" {human_bytes(have)} free there; {fix}"
        )
