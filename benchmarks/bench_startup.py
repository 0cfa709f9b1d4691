"""Benchmark: start-up time of every `moe-netsim` command's ``--help`` and of light commands.

    python benchmarks/bench_startup.py [--repeat N]

Runs each command as a fresh process (the installed ``moe-netsim`` script beside this Python,
else ``python -m experiments``) ``--repeat`` times and prints the median and the worst wall
time in a Markdown table, with the date, the commit and the machine load (``uptime``) that
docs/benchmarks.md quotes.  The target is under 0.5 s for each.
"""

from __future__ import annotations

import argparse
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


def _time(argv: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        out.append(time.perf_counter() - t0)
    return out


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
    print("| command | median s | worst s |")
    print("| --- | ---: | ---: |")
    worst = 0.0
    for cmd in cases:
        times = _time([*launch, *cmd], args.repeat)
        worst = max(worst, max(times))
        print(f"| `{' '.join(cmd)}` | {statistics.median(times):.3f} | {max(times):.3f} |",
              flush=True)
    print(f"\nworst {worst:.3f} s; target {TARGET_S} s: {'met' if worst < TARGET_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
