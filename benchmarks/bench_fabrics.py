"""Every strategy and both simulator modes on the 2026 fabrics (issue 14), end to end.

For each preset (default: ``nvl72-4racks`` and ``deepseek-decode-ep144``) a synthetic
DeepSeek-R1 trace of ``--tokens`` tokens is generated once (``trace synth``, data-parallel
origins), then every strategy places it (``place --preset``; 32 redundant experts for the
strategies that take replicas, as both presets' deployments use) and the layout is replayed
with ``simulate --mode analytic`` and ``--mode des`` with ``--dispatch deepep-normal`` (one
RDMA copy per token and remote server or rack, then NVLink fan-out).  Each step runs as a
command in its own process, as a user runs it; the table has its wall and CPU time (the
machine is shared: CPU time is the load-independent number), the network bytes (bytes entering
the scale-out fabric) and the replay's p99 latency (``latency_p99_s``).

    PYTHONPATH=. python benchmarks/bench_fabrics.py [--tokens 4096] [--presets a,b]
        [--strategies s1,s2] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from placement import STRATEGIES
from placement.strategies import SUPPORTS

PRESETS = ("nvl72-4racks", "deepseek-decode-ep144")
REDUNDANT = 32  # both presets' deployments: 256 + 32 = 288 physical experts


def _cli(*args: str) -> tuple[float, float]:
    """Run ``moe-netsim args``; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "experiments", *args], capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"moe-netsim {' '.join(args)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _summary(run: Path) -> dict:
    return pd.read_parquet(run / "summary.parquet").iloc[0].to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--strategies", default=",".join(sorted(STRATEGIES)))
    p.add_argument("--time-limit", default="60", help="place --time-limit (seconds)")
    args = p.parse_args(argv)
    print(f"{'preset':22s} {'strategy':15s} {'place_wall':>10s} {'place_cpu':>9s}"
          f" {'ana_cpu':>7s} {'des_cpu':>7s} {'des_wall':>8s} {'network_GB':>10s}"
          f" {'p99_ms':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for preset in args.presets.split(","):
            trace = d / f"{preset}.parquet"
            _cli("trace", "synth", "--model", "deepseek-r1", "--tokens", str(args.tokens),
                 "--out", str(trace), "--seed", "0")
            for strategy in args.strategies.split(","):
                layout = d / f"{preset}-{strategy}.parquet"
                extra = (["--replicas", str(REDUNDANT)]
                         if "replicas" in SUPPORTS.get(strategy, frozenset()) else [])
                pw, pc = _cli("place", "--fit", str(trace), "--preset", preset, "--strategy",
                              strategy, "--time-limit", args.time_limit, "--out", str(layout),
                              *extra)
                times = {}
                for mode in ("analytic", "des"):
                    run = d / f"{preset}-{strategy}-{mode}"
                    times[mode] = _cli("simulate", "--mode", mode, "--trace", str(trace),
                                       "--preset", preset, "--layout", str(layout),
                                       "--dispatch", "deepep-normal", "--out", str(run))
                s = _summary(d / f"{preset}-{strategy}-des")
                p99 = float(s["latency_p99_s"]) * 1e3
                print(f"{preset:22s} {strategy:15s} {pw:10.1f} {pc:9.1f}"
                      f" {times['analytic'][1]:7.1f} {times['des'][1]:7.1f}"
                      f" {times['des'][0]:8.1f} {s['network_bytes'] / 1e9:10.3f} {p99:7.3f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
