"""Benchmark of the native trace format: write and stream-read a DeepSeek-R1-sized trace.

    PYTHONPATH=. python benchmarks/bench_traces.py --tokens 1000000

Each phase runs in its own child process so that its peak resident memory (``ru_maxrss`` from
``os.wait4``) is measured alone:

write   generate random skewed routing for DeepSeek-R1 (58 MoE layers x top-8 of 256, origin
        GPU and step recorded) block by block and write it with ``TraceWriter``;
scan    stream the file back with ``iter_trace`` and count routes per expert;
verify  stream it again, regenerate the same blocks and check the round trip is exact;
stats   (with ``--stats-tokens N``) ``summarize_trace`` over the first N tokens with
        co-activation and transitions.

Nothing holds the whole trace in memory.  Prints one line per phase: wall time, peak RSS and
what it did.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from traces import TraceMeta, TraceWriter, iter_trace, model_preset
from traces.stats import expert_counts, summarize_trace
from traces.trace import RoutingTrace

BLOCK_TOKENS = 32_768


def random_blocks(num_tokens: int, seed: int) -> Iterator[RoutingTrace]:
    """Seeded random R1 routing with skewed expert popularity, distinct ids per token."""
    model = model_preset("deepseek-r1")
    meta = TraceMeta(model, source="random benchmark routing", produced_by="bench_traces.py")
    rng = np.random.default_rng(seed)
    L, E, k = model.num_moe_layers, model.num_routed_experts, model.top_k
    for start in range(0, num_tokens, BLOCK_TOKENS):
        n = min(BLOCK_TOKENS, num_tokens - start)
        ids = (E * rng.random((n * L, k), dtype=np.float32) ** 2).astype(np.uint8)
        rows = np.arange(n * L)
        while rows.size:  # redraw the (token, layer) rows whose k ids repeat one
            sub = ids[rows]
            dup = np.zeros(rows.size, dtype=bool)
            for r in range(k - 1):
                for q in range(r + 1, k):
                    dup |= sub[:, r] == sub[:, q]
            rows = rows[dup]
            ids[rows] = (E * rng.random((rows.size, k), dtype=np.float32) ** 2).astype(np.uint8)
        ids = ids.reshape(n, L, k)
        tok = np.arange(start, start + n, dtype=np.int64)
        yield RoutingTrace(
            meta=meta,
            experts=ids,
            seq_id=tok // 1024,
            position=(tok % 1024).astype(np.int32),
            origin_gpu=rng.integers(0, 256, n).astype(np.int32),
            step=(tok // 4096).astype(np.int32),
        )


def phase_write(path: Path, tokens: int, seed: int) -> dict[str, float]:
    blocks = random_blocks(tokens, seed)
    first = next(blocks)
    with TraceWriter(path, first.meta, has_origin=True, has_step=True) as w:
        w.write(first)
        for b in blocks:
            w.write(b)
    return {"tokens": w.num_tokens, "file_mb": path.stat().st_size / 1e6}


def phase_verify(path: Path, tokens: int, seed: int) -> dict[str, float]:
    expected = random_blocks(tokens, seed)
    n = 0
    routes = 0
    for got in iter_trace(path, chunk_tokens=BLOCK_TOKENS):
        want = next(expected)
        for name in ("experts", "seq_id", "position", "origin_gpu", "step"):
            if not np.array_equal(getattr(got, name), getattr(want, name)):
                raise SystemExit(f"round trip differs in {name} at token {n}")
        routes += int(expert_counts([got]).sum())
        n += got.num_tokens
    if n != tokens or next(expected, None) is not None:
        raise SystemExit(f"read {n} tokens, wrote {tokens}")
    return {"tokens": n, "routes": routes}


def phase_scan(path: Path) -> dict[str, float]:
    routes = 0
    n = 0
    for b in iter_trace(path, chunk_tokens=BLOCK_TOKENS):
        routes += int(expert_counts([b]).sum())
        n += b.num_tokens
    return {"tokens": n, "routes": routes}


def phase_stats(path: Path, tokens: int) -> dict[str, float]:
    def head() -> Iterator[RoutingTrace]:
        left = tokens
        for b in iter_trace(path, chunk_tokens=BLOCK_TOKENS):
            if left <= 0:
                return
            yield b.take(slice(0, left))
            left -= b.num_tokens

    st = summarize_trace(head(), pairs=True)
    return {"tokens": st.num_tokens}


def run_child(args: list[str]) -> tuple[dict[str, float], float, float]:
    """Run one phase in a child; (its result, wall seconds, peak RSS in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"phase {args[1]} failed with exit code {proc.returncode}")
    return json.loads(out), wall, usage.ru_maxrss / 1024  # Linux: ru_maxrss in KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="Where the trace goes (default: tmp).")
    ap.add_argument("--stats-tokens", type=int, default=0, help="Also time trace statistics.")
    phases = ("write", "scan", "verify", "stats")
    ap.add_argument("--phase", choices=phases, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        if a.phase == "write":
            res = phase_write(a.path, a.tokens, a.seed)
        elif a.phase == "scan":
            res = phase_scan(a.path)
        elif a.phase == "verify":
            res = phase_verify(a.path, a.tokens, a.seed)
        else:
            res = phase_stats(a.path, a.stats_tokens)
        print(json.dumps(res))
        return 0
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = Path(tmp) / "r1_trace.parquet"
        common = ["--path", str(path), "--tokens", str(a.tokens), "--seed", str(a.seed)]
        phases = ["write", "scan", "verify"] + (["stats"] if a.stats_tokens else [])
        print(f"DeepSeek-R1 trace, {a.tokens:,} tokens x 58 MoE layers x top-8")
        for ph in phases:
            extra = ["--stats-tokens", str(a.stats_tokens)] if ph == "stats" else []
            res, wall, rss = run_child(["--phase", ph, *common, *extra])
            detail = ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}"
                               for k, v in res.items())
            print(f"{ph:6s} {wall:7.1f} s   peak RSS {rss:7.0f} MB   ({detail})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
