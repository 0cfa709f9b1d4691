"""Benchmark of the engine importers: routed tokens per minute per core, and peak memory.

    PYTHONPATH=. python benchmarks/bench_engine_import.py --tokens 262144

Writes a DeepSeek-R1 routing trace (58 MoE layers, top-8 of 256, origins on 32 GPUs, 4,096
tokens per step) in each binary engine format with the project's exporters, then imports each
one back in a child process of its own (single-threaded, so the rate is per core) and reports
wall and CPU time (the child's, start-up included), routed tokens x 58 layers per CPU minute
(steadier than wall time on a shared machine; from a run without ``tracemalloc``, which
would double it), the child's peak resident memory (``ru_maxrss``: it includes pages of the
input mapped from disk, which the kernel can reclaim) and its peak heap (``tracemalloc``, in a
second run: NumPy and Python objects, what the chunk bounds).
The target (issue 18) is at least 1M tokens x 58 layers per minute per core
for the binary formats, with memory bounded by the chunk, not the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ("sglang-dump", "trtllm", "megatron", "vllm", "topk-parquet")
CHILD = """
import os, sys, time, tracemalloc
fmt, src, out, heap = sys.argv[1:5]
if heap == "1":
    tracemalloc.start()
from traces.importers import import_trace
from traces.model import model_preset
t0 = time.perf_counter()
n = import_trace(fmt, src, out, model_preset("deepseek-r1"))
print(n, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1])
os.remove(out)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=262_144)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--prepare", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(root)
    formats = [
        f
        for f in args.formats.split(",")
        if f not in ("sglang-dump", "megatron") or importlib.util.find_spec("torch") is not None
    ]
    if args.prepare is not None:
        sys.path.insert(0, str(root))
        _prepare(args.prepare, args.tokens, formats)
        return
    # The parent stays small (no numpy): a forked child's peak RSS starts from its parent's.
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--prepare",
                d,
                "--tokens",
                str(args.tokens),
                "--formats",
                ",".join(formats),
            ],
            env=env,
            check=True,
        )
        print(f"{args.tokens:,} R1 tokens; import, one core each:")
        for fmt in args.formats.split(","):
            if fmt not in formats:
                print(f"  {fmt:13s} skipped: needs torch (pip install 'moe-netsim[record]')")
                continue
            src = Path(d) / _name(fmt)
            out = Path(d) / f"back-{fmt}.parquet"
            n, seconds, wall, cpu, rss, _ = _child(env, fmt, src, out, heap=False)
            *_, heap = _child(env, fmt, src, out, heap=True)
            print(
                f"  {fmt:13s} {seconds:6.1f} s import ({wall:5.1f} s with start-up,"
                f" {cpu:5.1f} s CPU)  {n / cpu * 60 / 1e6:5.2f} M tokens x 58 layers per CPU"
                f" minute  peak RSS {rss / 1024:6.0f} MB, heap {heap / 1e6:5.0f} MB"
            )


def _child(
    env: dict[str, str], fmt: str, src: Path, out: Path, heap: bool
) -> tuple[int, float, float, float, int, int]:
    """One import in a process of its own: tokens, import s, wall s, CPU s, peak RSS KB, heap B.

    Speed and heap come from separate runs: ``tracemalloc`` roughly doubles the CPU time of
    an import (it hooks every allocation), so the timed run does not trace.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, fmt, str(src), str(out), "1" if heap else "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    assert proc.stdout is not None
    if status:
        raise SystemExit(f"{fmt}: import failed")
    n, seconds, peak_heap = proc.stdout.read().split()
    cpu = usage.ru_utime + usage.ru_stime
    return int(n), float(seconds), wall, cpu, usage.ru_maxrss, int(peak_heap)


def _name(fmt: str) -> str:
    return fmt + (".npz" if fmt == "vllm" else ".parquet" if "parquet" in fmt else "")


def _prepare(d: Path, tokens: int, formats: list[str]) -> None:
    from benchmarks.bench_traces import random_blocks
    from traces.importers.exports import EXPORT_FORMATS, export_trace
    from traces.io import write_blocks

    base = d / "trace.parquet"
    write_blocks(base, _with_steps(random_blocks(tokens, seed=0)))
    for fmt in formats:
        src = d / _name(fmt)
        if EXPORT_FORMATS[fmt][1]:
            src.mkdir()
        export_trace(fmt, base, src)


def _with_steps(blocks):  # noqa: ANN001, ANN202
    """Origins on 32 GPUs and 4,096 tokens per step, as a DP-attention EP32 deployment."""
    from dataclasses import replace

    import numpy as np

    start = 0
    for b in blocks:
        tok = np.arange(start, start + b.num_tokens)
        start += b.num_tokens
        yield replace(
            b, origin_gpu=(tok % 32).astype(np.int32), step=(tok // 4096).astype(np.int32)
        )


if __name__ == "__main__":
    main()
