"""Benchmark: a failure study over every single link failure of the R1 EP32 deployment.

    python benchmarks/bench_failures.py [--preset deepseek-prefill-ep32] [--tokens 2048]
        [--class link] [--strategy NAME ...]

Runs ``moe-netsim study failures`` as a fresh process on the DeepSeek prefill EP32 unit (4
servers of 8 GPUs, one 400 Gb/s NIC per GPU on 8 rails): the preset where this build has it,
else the same fabric built as ``rail-optimized`` (4 servers in one group, 4 spines).  Every
strategy, analytic mode for all failures, the DES on the worst failure per strategy and policy.
Prints wall and CPU time (user + system of the child), its peak RSS and the study's own
progress lines, with the date, the commit and the machine load (``uptime``) that
docs/benchmarks.md quotes.  The target: within 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 600.0


def _launcher() -> list[str]:
    script = Path(sys.executable).with_name("moe-netsim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "experiments"]


def _stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, commit {commit}, uptime: {load}"


def _cluster_args(preset: str, work: Path) -> list[str]:
    """``--preset NAME`` where this build knows it, else the same fabric as a file."""
    help_text = subprocess.run([*_launcher(), "study", "failures", "--help"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    if "--preset" in help_text:
        return ["--preset", preset]
    path = work / "ep32.json"
    subprocess.run([*_launcher(), "topology", "build", "rail-optimized", "--param",
                    "num_servers=4", "--param", "servers_per_group=4", "--out", str(path)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return ["--topology", str(path)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="deepseek-prefill-ep32")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--class", dest="failure_class", default="link")
    ap.add_argument("--strategy", action="append", default=[])
    args = ap.parse_args(argv)
    print(f"start: {_stamp()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cmd = [*_launcher(), "study", "failures", *_cluster_args(args.preset, work),
               "--model", "deepseek-r1", "--tokens", str(args.tokens), "--class",
               args.failure_class, "--out", str(work / "run"),
               *[x for p in args.strategy for x in ("--strategy", p)]]
        print("command:", " ".join(cmd[len(_launcher()):]))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if status:
        print(f"the study failed (status {status})")
        return 1
    cpu = usage.ru_utime + usage.ru_stime
    print(f"\nwall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB"
          f" (target {TARGET_S:.0f} s wall on 2 cores: {'met' if wall <= TARGET_S else 'NOT met'})")
    print(f"end: {_stamp()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
