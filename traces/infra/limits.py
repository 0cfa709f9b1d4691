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
from dataclasses import dataclass, replace
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


PARQUET_FILE_MIN_BYTES = 1024  # schema and footer of a pandas-written file (measured 2-5 KiB)
# A replayed token's record in tokens.parquet, the fewest bytes measured (origins and latencies
# repeat within a micro-batch, and Parquet's dictionary, run-length and Snappy coding squeeze
# them): a study cell of 4 GPUs replaying 524,288 tokens in one micro-batch (4 distinct origins
# and latencies) took 21,483 bytes, 0.041 per token; 16,384 deepseek-moe-16b tokens on 64 GPUs
# 0.25-0.28; `simulate --mode des` 0.56 (its record has more columns)
TOKEN_RECORD_MIN_BYTES = 1 / 32
LAYOUT_ENTRY_MIN_BYTES = 1  # one (layer, expert, copy) -> GPU entry of a layout file
LINK_ROW_MIN_BYTES = 1  # one link direction's row of links.parquet (measured 85 bytes)
# Parquet files of a finished study cell: its row and the detail frames of a replay (links,
# tokens, layers, expert_load, server_load, utilisation) or of a rebalancing run (timeline);
# the merge writes results.parquet and one table of all the cells per detail frame
CELL_FILES = {"replay": 7, "rebalance": 2}
# CPU seconds per (token, MoE layer) of each replay mode: the R1 replay of docs/benchmarks.md
# (262,144 tokens x 58 layers on 256 GPUs: DES 31.7 s, flow 31.2 s, analytic 3.2 s); larger
# clusters cost more per token, so this is an order of magnitude, not a forecast
CPU_S_PER_TOKEN_LAYER = {"des": 2e-6, "flow": 2e-6, "analytic": 2e-7}
# CPU seconds per DES hop event (a chunk train stepping onto its next hop, counted by
# simulator/des_cost.py): 6-10 us measured on R1 replays of 1,024 tokens with every dispatch
# scheme on EP32 (rail-optimized) and a 32-server fat tree on an idle machine, 11-18 us at load
# 7 (docs/benchmarks.md, "How long a DES replay will take"); hops over one link are the cheap
# end, sprayed hops and DeepEP's sliced trains the dear one.  `simulate` and `rebalance` count
# their events with it: the per-token rate above can be 100x off for the DES
CPU_S_PER_HOP_EVENT = 1e-5
# CPU seconds a study cell takes whatever its size: its trace, fit, ceiling, the replay's
# set-up and frames (measured: round-robin cells of the quick paper grid, 256 deepseek-moe-16b
# tokens on 24 GPUs, 0.2-0.4 s, of which the replay itself is 0.015 s by the rate above)
CELL_FIXED_CPU_S = 0.2
OUT_DISK_FIX = "free some space there or choose an --out on another file system"
LONG_RUN_S = 10.0  # a run estimated at this much CPU time or more gets a line first
LARGE_ILP_BINARIES = 100_000  # an ILP of this many binaries or more gets a line first


def _per_token() -> str:
    return f"1/{round(1 / TOKEN_RECORD_MIN_BYTES)} byte per replayed token (its record)"


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
             f" direction + with `--mode des` or `flow` {_per_token()}", "disk"),
    SizeRule("`study paper` and `sweep` run directories",
             f"per cell still to run 1 KiB per Parquet file ({CELL_FILES['replay']}; "
             f"{CELL_FILES['rebalance']} for a rebalancing cell) + {_per_token()} + 1 byte per"
             " link direction; the merged tables hold every cell's records again (results +"
             " one file per table)", "disk"),
    SizeRule("`study failures` run directory", "1 KiB per Parquet file (4)", "disk"),
    SizeRule("`rebalance` run directory",
             "1 KiB per Parquet file (timeline, migrations, one layout at least) + 1 byte per"
             " (MoE layer, expert) of that layout", "disk"),
    SizeRule("`simulate` and `rebalance` run time",
             "--mode des: the first micro-batch's hop events (its dispatch plans, as the replay"
             f" builds them) scaled to the trace's tokens x {CPU_S_PER_HOP_EVENT * 1e6:g} us;"
             " flow and analytic: tokens x MoE layers x CPU seconds per token-layer of the"
             " mode (flow 2 us, analytic 0.2 us: the R1 replay of docs/benchmarks.md)", "time"),
    SizeRule("`study paper`, `study failures` and `sweep` run time",
             f"per cell {CELL_FIXED_CPU_S:g} s + its replays: a `study paper` or `sweep` cell's"
             " DES replay by the hop events of its first micro-batch placed round-robin (as"
             f" `simulate` counts them) x {CPU_S_PER_HOP_EVENT * 1e6:g} us, its analytic count,"
             " flow replays, rebalancing cells and `study failures` (per strategy: the analytic"
             " count of each failure, then its DES replays) by tokens x MoE layers x the"
             " per-token-layer rate of their mode; + the time limit of each solve with one"
             " (ilp*, dedup*), in full",
             "time"),
    SizeRule("`place` ILP size (ilp, ilp-load, ilp-origin, ilp-bytes, ilp-bottleneck)",
             "MoE layers x routed experts x GPUs binaries at most; each HiGHS solve stops at"
             " `--time-limit`", "time"),
)

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


def replay_cpu_s(tokens: int, moe_layers: int, mode: str) -> float:
    """Order of magnitude of the CPU seconds of one replay (or count) in ``mode``."""
    return tokens * moe_layers * CPU_S_PER_TOKEN_LAYER[mode]


def run_time_line(what: str, tokens: int, moe_layers: int, mode: str) -> str | None:
    """The line said before a replay whose CPU time is of the order of :data:`LONG_RUN_S`
    or more (None for a short one)."""
    rate = CPU_S_PER_TOKEN_LAYER[mode]
    seconds = replay_cpu_s(tokens, moe_layers, mode)
    if seconds < LONG_RUN_S:
        return None
    return (f"{what}: expect CPU time of the order of {_duration(seconds)} ({tokens:,} tokens x"
            f" {moe_layers} MoE layers at about {rate * 1e6:g} us each in --mode {mode};"
            " docs/benchmarks.md)")


def des_time_line(what: str, hop_events: float) -> str | None:
    """The line said before a DES replay of ``hop_events`` hop events (counted on its first
    micro-batch by :func:`simulator.des_cost.microbatch_work` and scaled to the run) whose CPU
    time is of the order of :data:`LONG_RUN_S` or more (None for a short one)."""
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


@dataclass(frozen=True)
class CellWork:
    """What one study cell (or one strategy of a failure study) costs: ``replay_s`` CPU seconds
    of replays (:func:`replay_cpu_s`), ``solve_limit_s`` of solver time at most (the sum of
    its solves' time limits; 0 without a time-limited solver), and for the disk its
    ``replay_tokens`` records and ``link_directions`` rows (0 for what writes none) in
    ``kind`` of cell (:data:`CELL_FILES`)."""

    replay_s: float
    solve_limit_s: float = 0.0
    replay_tokens: int = 0
    link_directions: int = 0
    kind: str = "replay"
    des_token_layers: int = 0  # tokens x MoE layers of its DES replay, in ``replay_s``
    des_hop_events: float = 0.0  # its DES replay's hop events once counted (:meth:`counted`)

    def counted(self, hop_events: float) -> CellWork:
        """This cell with its DES replay costed by ``hop_events`` x :data:`CPU_S_PER_HOP_EVENT`
        instead of the per-token rate (the count of experiments/studies/des_estimate.py)."""
        per_token = self.des_token_layers * CPU_S_PER_TOKEN_LAYER["des"]
        return replace(self, replay_s=self.replay_s - per_token
                       + hop_events * CPU_S_PER_HOP_EVENT, des_hop_events=hop_events)

    def record_bytes(self) -> float:
        """The fewest bytes its per-token and per-link records take in one table set."""
        return (self.replay_tokens * TOKEN_RECORD_MIN_BYTES
                + self.link_directions * LINK_ROW_MIN_BYTES)


def study_disk_bytes(todo: list[CellWork], every: list[CellWork]) -> float:
    """Lower bound of the disk a study run still needs: the files and records of the cells
    ``todo``, then the merged tables of ``every`` cell (their records again)."""
    if not todo:
        return 0.0
    cells = sum(CELL_FILES[c.kind] * PARQUET_FILE_MIN_BYTES + c.record_bytes() for c in todo)
    tables = 1 + sum(CELL_FILES[k] - 1 for k in {c.kind for c in every})
    return cells + tables * PARQUET_FILE_MIN_BYTES + sum(c.record_bytes() for c in every)


def _count(n: int, unit: str) -> str:
    """'1 cell', '3 cells', '2 strategies'."""
    if n == 1:
        return f"1 {unit}"
    return f"{n:,} " + (unit[:-1] + "ies" if unit.endswith("y") else unit + "s")


def study_time_line(what: str, unit: str, work: list[CellWork]) -> str | None:
    """The line said before a study whose CPU time may reach :data:`LONG_RUN_S` (its replays'
    order of magnitude plus every solve's time limit in full), None for a short one; ``unit``
    names what ``work`` holds one of (cell, strategy)."""
    replay = sum(w.replay_s for w in work)
    limited = [w.solve_limit_s for w in work if w.solve_limit_s > 0]
    if not work or replay + sum(limited) < LONG_RUN_S:
        return None
    lo, hi = min(w.replay_s for w in work), max(w.replay_s for w in work)
    (a, a_unit), (b, b_unit) = _duration(lo).split(), _duration(hi).split()
    each = (f"{b} {b_unit}" if (a, a_unit) == (b, b_unit)
            else f"{a}-{b} {b_unit}" if a_unit == b_unit else f"{a} {a_unit} to {b} {b_unit}")
    line = (f"{what}: {_count(len(work), unit)}; expect CPU time of the order of"
            f" {_duration(replay)} for the replays ({each} per {unit})")
    if limited:
        line += (f" plus at most {_duration(sum(limited))} of solver time (the time limits"
                 f" of {_count(len(limited), unit)}, up to {_duration(max(limited))} each)")
    des = [w.des_hop_events for w in work if w.des_hop_events > 0]
    if des:
        line += (f"; the DES replays of {_count(len(des), unit)} estimated from"
                 f" {sum(des):.2g} hop events, counted on each one's first micro-batch placed"
                 f" round-robin as a stand-in for its strategy, at about"
                 f" {CPU_S_PER_HOP_EVENT * 1e6:g} us each")
    return line + "; docs/background/estimates.md"
