"""Benchmark: `moe-netsim trace synth` of a 1M-token DeepSeek-R1 trace, streamed to Parquet.

    PYTHONPATH=. python benchmarks/bench_synth.py [--tokens N] [--keep FILE] [synth options]

Runs the command in this process and prints wall time, CPU time (user + system, all threads)
and peak resident memory (ru_maxrss).  Extra arguments go to `trace synth` unchanged, e.g.
``--load-stats FILE``, ``--token-corr 0.3``, ``--tenant share=1:gpus=0-127``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from experiments.cli import main as cli_main
from traces import read_trace_meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--model", default="deepseek-r1")
    ap.add_argument("--keep", type=Path, default=None, help="Keep the trace here (default: temp)")
    args, rest = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "bench.parquet"
        cmd = ["trace", "synth", "--model", args.model, "--tokens", str(args.tokens),
               "--out", str(out), "--gpus", "256", "--overwrite", *rest]
        w0, t0 = time.perf_counter(), os.times()
        code = cli_main(cmd)
        w1, t1 = time.perf_counter(), os.times()
        if code:
            return code
        meta, n = read_trace_meta(out)
        size_mb = out.stat().st_size / 1e6
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = meta.model
    print(
        f"{m.name}: {n} tokens x {m.num_moe_layers} MoE layers x top-{m.top_k}"
        f" -> {size_mb:.0f} MB Parquet\n"
        f"moe-netsim {' '.join(a for a in cmd if a != '--overwrite')}\n"
        f"wall {w1 - w0:.1f} s, cpu {cpu:.1f} s, peak RSS {rss_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
