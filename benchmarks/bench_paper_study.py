"""Benchmark of `moe-netsim study paper`: wall clock, CPU time and machine load of one run.

    .venv/bin/python benchmarks/bench_paper_study.py [--full] [--out DIR] [-- EXTRA STUDY FLAGS]

Runs the study as a user does (2 local Dask workers unless the extra flags say otherwise, with
the report) into a fresh directory, and prints one Markdown row for docs/benchmarks.md: cells,
failed cells, wall time, CPU time of the command and its worker processes (user + system), the
load average before and after, the commit and the date.  On a shared machine the wall time
grows with the load; the CPU time is what the run itself costs (wall on an idle 2-core machine
is about CPU / 2 plus the cluster start).  The targets (issue 12): ``--quick`` under 3 minutes,
the full grid under 30 minutes, on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="The full grid (default: --quick).")
    ap.add_argument("--out", type=Path, default=None, help="Run directory (default: a temporary"
                    " one, removed afterwards).")
    ap.add_argument("extra", nargs="*", help="More flags for `moe-netsim study paper`.")
    args = ap.parse_args()
    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-paper-"))
        out = tmp / "run"
    cmd = [sys.executable, "-m", "experiments", "study", "paper", "--out", str(out),
           *([] if args.full else ["--quick"]), *args.extra]
    if out.exists():
        cmd.append("--overwrite")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    try:
        meta = json.loads((out / "meta.json").read_text())
        cells, failed = meta.get("cells", 0), len(meta.get("cells_failed", []))
    except (OSError, json.JSONDecodeError):
        cells, failed = 0, 0
    if proc.returncode not in (0, 3):  # 3: finished with failed cells
        print(proc.stderr[-2000:], file=sys.stderr)
    what = "`moe-netsim study paper" + ("" if args.full else " --quick") + (
        " " + " ".join(args.extra) if args.extra else "") + "`"
    print(f"| {what} | {cells} ({failed} failed; exit {proc.returncode}) | {_minutes(wall)} wall,"
          f" {_minutes(cpu)} CPU | {load0[0]:.0f} before, {load1[0]:.0f} after |"
          f" {_commit()}, {datetime.date.today().isoformat()} |")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if proc.returncode in (0, 3) else 1


if __name__ == "__main__":
    sys.exit(main())
