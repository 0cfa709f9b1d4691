"""Benchmark: start-up time of every `moe-netsim` command's ``--help`` and of light commands.

    python benchmarks/bench_startup.py [--repeat N]

Runs each command as a fresh process (the installed ``moe-netsim`` script beside this Python,
else ``python -m experiments``) ``--repeat`` times and prints the median and the worst wall
time in a Markdown table, with the date, the commit and the machine load (``uptime``) that
docs/benchmarks.md quotes, and the CPU time of each run (steadier on a loaded machine).
The target is under 0.5 s wall for each.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.cli import command_paths  # noqa: E402

LIGHT = (("topology", "list"), ("topology", "show", "fat-tree"))
TARGET_S = 0.5


def _launcher() -> list[str]:
    script = Path(sys.executable).with_name("moe-netsim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "experiments"]


def _time(argv: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system of the child) seconds of each run."""
    wall, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def _stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, commit {commit}, uptime: {load}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="Runs per command (default 5).")
    args = ap.parse_args(argv)
    launch = _launcher()
    cases = [["--help"]] + [[*p, "--help"] for p in command_paths()] + [list(c) for c in LIGHT]
    print(_stamp())
    print(f"\n{args.repeat} runs each, `{' '.join(Path(a).name for a in launch)} ...`\n")
    print("| command | wall s, median | wall s, worst | CPU s, median |")
    print("| --- | ---: | ---: | ---: |")
    worst = 0.0
    for cmd in cases:
        wall, cpu = _time([*launch, *cmd], args.repeat)
        worst = max(worst, max(wall))
        print(f"| `{' '.join(cmd)}` | {statistics.median(wall):.3f} | {max(wall):.3f} |"
              f" {statistics.median(cpu):.3f} |", flush=True)
    verdict = "met" if worst < TARGET_S else "NOT met (see the load above)"
    print(f"\nworst wall {worst:.3f} s; target {TARGET_S} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
