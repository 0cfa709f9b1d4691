"""Size estimates checked before allocation: the one place that decides "too large for memory".

A command about to build a large array (a GPU-pair matrix, a route table, a trace held whole)
estimates its bytes first and calls :func:`check_fits`; when the estimate exceeds the memory
this machine has available, it stops with an :class:`InputError` that states the estimate in
GB and what to change, before anything is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from traces.infra.errors import InputError

GB = 1e9
# the share of the available memory one allocation may take (the rest: the interpreter,
# the libraries and the other arrays of the run)
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class SizeEstimate:
    """Bytes a structure will take, and what it is (for the message)."""

    what: str
    nbytes: float

    @property
    def gb(self) -> float:
        return self.nbytes / GB


def available_bytes() -> float:
    """Memory available to this process: MemAvailable of /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_fits(estimate: SizeEstimate, where: str, hint: str,
               available: float | None = None) -> None:
    """Raise :class:`InputError` when ``estimate`` exceeds ``MEMORY_SHARE`` of the available
    memory; ``where`` names the user's file or flag, ``hint`` says what to do instead."""
    avail = available_bytes() if available is None else available
    if estimate.nbytes > MEMORY_SHARE * avail:
        raise InputError(
            f"{where}: {estimate.what} would need about {estimate.gb:.1f} GB, more than"
            f" {MEMORY_SHARE:.0%} of the {avail / GB:.1f} GB available; {hint}"
        )


def gpu_pair_matrix(num_gpus: int, bytes_per_entry: int = 8, copies: int = 1) -> SizeEstimate:
    """A dense [gpus, gpus] matrix (``copies`` of it alive at once)."""
    return SizeEstimate(
        f"a {num_gpus} x {num_gpus} GPU-pair matrix", float(num_gpus) ** 2 * bytes_per_entry
        * copies,
    )
