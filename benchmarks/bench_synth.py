"""Benchmark: generate a 1M-token DeepSeek-R1 synthetic trace and stream it to Parquet.

    PYTHONPATH=. python benchmarks/bench_synth.py [--tokens N] [--out FILE]

Prints wall time, CPU time and peak resident memory (ru_maxrss) of this process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from traces import SynthConfig, TraceWriter, iter_synthetic, model_preset, read_trace_meta
from traces.synthetic import build_designs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--model", default="deepseek-r1")
    ap.add_argument("--chunk-tokens", type=int, default=65_536)
    ap.add_argument("--token-corr", type=float, default=0.0)
    ap.add_argument("--layer-corr", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=None, help="Keep the trace here (default: temp)")
    args = ap.parse_args(argv)
    cfg = SynthConfig(
        model_preset(args.model),
        num_tokens=args.tokens,
        num_gpus=256,
        token_corr=args.token_corr,
        layer_corr=args.layer_corr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "bench.parquet"
        w0, c0 = time.perf_counter(), time.process_time()
        build_designs(cfg)
        w1, c1 = time.perf_counter(), time.process_time()
        blocks = iter_synthetic(cfg, chunk_tokens=args.chunk_tokens)
        first = next(blocks)
        with TraceWriter(out, first.meta) as w:
            w.write(first)
            for block in blocks:
                w.write(block)
        w2, c2 = time.perf_counter(), time.process_time()
        _, n = read_trace_meta(out)
        size_mb = out.stat().st_size / 1e6
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.model}: {n} tokens x {cfg.model.num_moe_layers} MoE layers x top-{cfg.model.top_k}"
        f" -> {size_mb:.1f} MB Parquet\n"
        f"sampling tables: wall {w1 - w0:.1f} s, cpu {c1 - c0:.1f} s"
        f" (built again inside the run below)\n"
        f"generate + write: wall {w2 - w1:.1f} s, cpu {c2 - c1:.1f} s\n"
        f"peak RSS: {rss_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
