"""Simulated DeepEP kernels beside DeepEP's published tables (docs/background/).

Replays every configuration of DeepEP's published tables (:mod:`simulator.calibration`)
through the discrete-event model on the H800 testbed's hardware facts (each with its source
in :mod:`simulator.timing`) and prints the parameter table and both result tables as the
calibration page shows them, with the relative difference.

    PYTHONPATH=. python benchmarks/bench_calibration.py [--seed 0] [--only ll|normal]
        [--ep 8,16]
"""

from __future__ import annotations

import argparse
import sys
import time

from simulator import calibration as cal


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["ll", "normal"])
    p.add_argument("--ep", help="comma-separated EP sizes (default: every row)")
    args = p.parse_args()
    eps = None if args.ep is None else [int(x) for x in args.ep.split(",")]
    t0 = time.process_time()
    print("Hardware parameters:\n")
    print("\n".join(cal.parameter_table()))
    if args.only in (None, "ll"):
        print(f"\nLow-latency kernels (deepep-ll, {cal.LL_TOKENS_PER_RANK} tokens per rank):\n")
        ll = [e for e in eps if e in cal.LL_TABLE] if eps else None
        print("\n".join(cal.markdown(cal.low_latency(args.seed, ll))))
    if args.only in (None, "normal"):
        print(f"\nNormal kernels (deepep-normal, {cal.NORMAL_TOKENS_PER_RANK} tokens per rank),"
              " bottleneck bandwidth:\n")
        nm = [e for e in eps if e in cal.NORMAL_TABLE] if eps else None
        print("\n".join(cal.markdown(cal.normal(args.seed, nm))))
    print(f"\n({time.process_time() - t0:.0f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
