"""Sizes checked before work: exact integer byte counts and memory or disk estimates, the one
module that decides "too large".

Byte counts (copies x bytes per copy, tokens x layers x bytes) are multiplied as Python
integers, which cannot overflow, and refused when they would not fit the int64 columns the
results are written in (:func:`exact_int64`).  A command that is about to allocate or write
something whose size follows from the user's numbers estimates it first and refuses, with the
estimate, what cannot fit the memory this machine has available (:func:`check_memory`) or the
output's disk (:func:`check_disk`): one line, exit 2, before anything is allocated or written,
in one shape: ``<what> needs at least <size> of <memory|disk>, more than the <size> ...;
<fix>``.  Estimates are lower bounds (the arrays' own bytes, the fewest bytes a row can take
on disk), so a refusal is never wrong; what passes may still be slow.  Run time is estimated
too, to its order of magnitude, and said on one line before a long run (never refused:
:func:`run_time_line`, :func:`des_time_line`, :func:`ilp_size_line`).  :data:`SIZE_RULES` is
the table of every estimate (the error reference is generated from it).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SizeRule:
    """One estimate made before work: who makes it, how it is estimated, what it must fit."""

    who: str
    estimated_as: str
    fits: str  # "memory", "disk", "int64" or "time" (a line before the run, not a refusal)


SIZE_RULES: tuple[SizeRule, ...] = (
    SizeRule("`topology build`, `--fat-tree`, study topologies",
             "servers x (1 + GPUs per server) nodes and as many links, 100 bytes each",
             "memory"),
    SizeRule("route tables (`build_route_table`)",
             "8 bytes per middle-route link + 64 bytes per server pair", "memory"),
    SizeRule("GPU-pair matrices (distances, placement)", "8 bytes per GPU pair", "memory"),
    SizeRule("placement arrays (`placement_arrays`)",
             "16 bytes per GPU pair + (used links + 8) bytes per server pair", "memory"),
    SizeRule("`trace synth` output", "tokens x MoE layers x top-k bytes", "disk"),
    SizeRule("`trace synth` chunks",
             "3 x `--chunk-tokens` x MoE layers x top-k bytes + 8 bytes per GPU", "memory"),
    SizeRule("byte counts of `simulate`, `rebalance`, `place`, study and sweep cells",
             "tokens x MoE layers x top-k x bytes per route (dispatch + combine) x longest"
             " path, in exact integers", "int64"),
    SizeRule("`rebalance` migrated weights",
             "MoE layers x routed experts x weight bytes of one expert", "int64"),
    SizeRule("`simulate --mode des` records", "tokens x 8 x (4 + MoE layers) bytes", "memory"),
    SizeRule("`simulate` run directory",
             "1 KiB per Parquet file (3; 7 with `--mode des` or `flow`) + 1 byte per link"
             " direction + with `--mode des` or `flow` 0.25 bytes per token (its record)",
             "disk"),
    SizeRule("`study paper` and `sweep` run directories", "1 KiB per cell still to run",
             "disk"),
    SizeRule("`study failures` run directory", "1 KiB per Parquet file (4)", "disk"),
    SizeRule("`rebalance` run directory",
             "1 KiB per Parquet file (timeline, migrations, one layout at least) + 1 byte per"
             " (MoE layer, expert) of that layout", "disk"),
    SizeRule("`simulate` run time",
             "tokens x MoE layers x CPU seconds per token-layer of the mode (des and flow"
             " 2 us, analytic 0.2 us: the R1 replay of docs/benchmarks.md)", "time"),
    SizeRule("`place` ILP size (ilp, ilp-load, ilp-origin, ilp-bytes, ilp-bottleneck)",
             "MoE layers x routed experts x GPUs binaries at most; each HiGHS solve stops at"
             " `--time-limit`", "time"),
)

PARQUET_FILE_MIN_BYTES = 1024  # schema and footer of a pandas-written file (measured 2-5 KiB)
TOKEN_RECORD_MIN_BYTES = 0.25  # a DES token's record (measured 0.56: latencies repeat in a batch)
LAYOUT_ENTRY_MIN_BYTES = 1  # one (layer, expert, copy) -> GPU entry of a layout file
CELL_MIN_BYTES = 1024  # a study cell's directory: its result row at least
# CPU seconds per (token, MoE layer) of the replay modes without events: the R1 replay of
# docs/benchmarks.md (262,144 tokens x 58 layers on 256 GPUs: flow 31.2 s, analytic 3.2 s);
# larger clusters cost more per token, so this is an order of magnitude, not a forecast.  The
# DES's cost is its events, counted instead (des_time_line)
CPU_S_PER_TOKEN_LAYER = {"flow": 2e-6, "analytic": 2e-7}
OUT_DISK_FIX = "free some space there or choose an --out on another file system"
# CPU seconds per DES hop event (a chunk train stepping onto its next hop, counted by
# simulator/des_cost.py): 6-18 us measured on R1 replays of 1,024-4,096 tokens with every
# dispatch scheme on EP32 (rail-optimized) and a 32-server fat tree (docs/benchmarks.md,
# "DES time estimate"); single-link hops are the cheap end, sprayed hops and DeepEP's sliced
# trains the dear one, so the line is right within about 2x
CPU_S_PER_HOP_EVENT = 1.2e-5
LONG_RUN_S = 10.0  # a run estimated at this much CPU time or more gets a line first
LARGE_ILP_BINARIES = 100_000  # an ILP of this many binaries or more gets a line first


def available_memory_bytes() -> int:
    """Memory this process can take: MemAvailable of /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX: never refuse on a guess
        return INT64_MAX


def check_memory(need_bytes: float, what: str, fix: str) -> None:
    """Refuse ``what`` (one line with the estimate) when it needs more than the memory this
    machine has available."""
    have = available_memory_bytes()
    if need_bytes > have:
        raise InputError(
            f"{what} needs at least {human_bytes(need_bytes)} of memory, more than the"
            f" {human_bytes(have)} available; {fix}"
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


def check_disk(need_bytes: float, path: Path, what: str, fix: str) -> None:
    """Refuse ``what`` when its output at ``path`` needs more than the free disk there."""
    have = free_disk_bytes(path)
    if need_bytes > have:
        raise InputError(
            f"{what} needs at least {human_bytes(need_bytes)} of disk at {path}, more than the"
            f" {human_bytes(have)} free there; {fix}"
        )


def _duration(seconds: float) -> str:
    """Order of magnitude of a duration: '20 s', '3 min', '2 h', '4 days'."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.2g} {unit}"
    return f"{seconds:.2g} s"


def run_time_line(what: str, tokens: int, moe_layers: int, mode: str) -> str | None:
    """The line said before a replay whose CPU time is of the order of :data:`LONG_RUN_S`
    or more (None for a short one)."""
    rate = CPU_S_PER_TOKEN_LAYER[mode]
    seconds = tokens * moe_layers * rate
    if seconds < LONG_RUN_S:
        return None
    return (f"{what}: expect CPU time of the order of {_duration(seconds)} ({tokens:,} tokens x"
            f" {moe_layers} MoE layers at about {rate * 1e6:g} us each in --mode {mode};"
            " docs/benchmarks.md)")


def des_time_line(what: str, hop_events: float) -> str | None:
    """The line said before a DES replay of ``hop_events`` hop events (counted on its first
    micro-batch by :func:`simulator.des_cost.microbatch_work` and scaled to the run) whose CPU time
    is of the order of :data:`LONG_RUN_S` or more (None for a short one)."""
    seconds = hop_events * CPU_S_PER_HOP_EVENT
    if seconds < LONG_RUN_S:
        return None
    return (f"{what}: expect CPU time of the order of {_duration(seconds)} (about"
            f" {hop_events:.2g} hop events of chunk trains, counted on the first micro-batch,"
            f" at about {CPU_S_PER_HOP_EVENT * 1e6:g} us each in --mode des;"
            " docs/benchmarks.md)")


def ilp_size_line(what: str, moe_layers: int, experts: int, gpus: int,
                  time_limit_s: float) -> str | None:
    """The line said before a placement ILP of :data:`LARGE_ILP_BINARIES` binaries or more
    (None for a smaller one)."""
    binaries = moe_layers * experts * gpus
    if binaries < LARGE_ILP_BINARIES:
        return None
    return (f"{what}: an ILP of up to {moe_layers} x {experts} x {gpus} = {binaries:,} binaries"
            " (MoE layers x experts x GPUs; fewer once equal GPUs and experts merge); each"
            f" HiGHS solve stops after {time_limit_s:g} s (--time-limit)")
