"""Benchmark of the simulator's reference replay (issue 6).

Reference: a synthetic DeepSeek-R1 trace of 262,144 tokens (8 steps of 32,768), 58 MoE layers,
top-8, on a k=10 fat tree with 256 GPUs in 32 servers, round-robin layout.  The trace is
written once to a temporary Parquet file; then the analytic counter and the discrete-event
replay each run in a fresh subprocess that streams the file (read in blocks of one step, one
micro-batch per step, two in flight) and reports its wall time and peak resident memory.

Only the replay is timed, so the trace is drawn cheaply: per layer, 4,096 top-8 expert sets
are drawn once from a skewed (Zipf 0.9) popularity with Gumbel top-k, and every token picks
one of them with Zipf-skewed probability.  Sequences of 128 tokens are dealt to GPUs
round-robin (origin = sequence mod GPUs), so every GPU holds tokens in every step.

    PYTHONPATH=. python benchmarks/bench_simulator.py [--tokens 262144 --step-tokens 32768]
        [--dispatch all-to-all --multipath spray]

``--multipath hash`` is the single-path routing every replay used before multipath.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simulator.cluster.builders import build_fat_tree
from simulator.cluster.multipath_modes import DEFAULT_MULTIPATH, MULTIPATH_MODES
from simulator.cluster.paths import build_route_table
from simulator.traffic_config import DEFAULT_DISPATCH, DISPATCH_SCHEMES
from traces.io import TraceWriter, iter_trace
from traces.model import model_preset
from traces.trace import RoutingTrace, TraceMeta

PATTERNS = 4096


def write_trace(
    path: Path, tokens: int, step_tokens: int, num_gpus: int, seed: int, seq_len: int = 128
) -> None:
    m = model_preset("deepseek-r1")
    rng = np.random.default_rng(seed)
    e = m.num_routed_experts
    base = np.log(np.arange(1, e + 1) ** -0.9)
    patterns = np.empty((m.num_moe_layers, PATTERNS, m.top_k), dtype=np.uint8)
    for li in range(m.num_moe_layers):
        logp = base[rng.permutation(e)]
        scores = logp[None, :] + rng.gumbel(size=(PATTERNS, e))
        patterns[li] = np.argpartition(-scores, m.top_k - 1, axis=1)[:, : m.top_k]
    pick_p = np.arange(1, PATTERNS + 1) ** -0.5
    pick_p /= pick_p.sum()
    meta = TraceMeta(model=m, source="benchmark", produced_by="benchmarks/bench_simulator.py")
    with TraceWriter(path, meta) as w:
        for start in range(0, tokens, step_tokens):
            n = min(step_tokens, tokens - start)
            pick = rng.choice(PATTERNS, size=(n, m.num_moe_layers), p=pick_p)
            experts = patterns[np.arange(m.num_moe_layers)[None, :], pick]
            tok = np.arange(start, start + n, dtype=np.int64)
            seq = tok // seq_len
            w.write(
                RoutingTrace(
                    meta=meta,
                    experts=experts,
                    seq_id=seq,
                    position=(tok % seq_len).astype(np.int32),
                    origin_gpu=(seq % num_gpus).astype(np.int32),
                    step=(tok // step_tokens).astype(np.int32),
                )
            )


def _layout(layers: int, experts: int, gpus: int) -> np.ndarray:
    idx = np.arange(layers)[:, None] * experts + np.arange(experts)[None, :]
    return idx % gpus


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_mode(
    mode: str, trace: Path, k: int, servers: int, traffic_options: dict[str, str],
    step_tokens: int = 32_768,
) -> dict[str, float]:
    """One timed run in this process (called in a subprocess by ``main``)."""
    from simulator.analytic import count_traffic
    from simulator.config import SimConfig
    from simulator.engine import simulate
    from simulator.microbatches import by_steps
    from simulator.traffic_config import TrafficConfig
    from traces.io import read_trace_meta

    routes = build_route_table(build_fat_tree(k, servers))
    meta, _ = read_trace_meta(trace)
    m = meta.model
    layout = _layout(m.num_moe_layers, m.num_routed_experts, routes.num_gpus)
    traffic = TrafficConfig(**traffic_options)
    t0 = time.perf_counter()
    c0 = _cpu_s()
    blocks = by_steps(iter_trace(trace, step_tokens))
    if mode == "analytic":
        res = count_traffic(blocks, routes, layout, traffic)
        out = {"hops_per_token": res.hops_per_token, "network_bytes": float(res.network_bytes)}
    else:
        sim = simulate(blocks, routes, layout, SimConfig(traffic=traffic))
        out = {
            "hops_per_token": sim.summary["hops_per_token"],
            "network_bytes": sim.summary["network_bytes"],
            "makespan_s": sim.summary["makespan_s"],
            "latency_p99_s": sim.summary["latency_p99_s"],
        }
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = _cpu_s() - c0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def reference_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe the reference replay (also used by bench_flow.py)."""
    p.add_argument("--tokens", type=int, default=262_144)
    p.add_argument("--step-tokens", type=int, default=32_768)
    p.add_argument("--fat-tree-k", type=int, default=10)
    p.add_argument("--servers", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dispatch", default=DEFAULT_DISPATCH, choices=list(DISPATCH_SCHEMES))
    p.add_argument("--multipath", default=DEFAULT_MULTIPATH, choices=list(MULTIPATH_MODES))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    reference_arguments(p)
    p.add_argument(
        "--seq-len", type=int, default=128,
        help="Tokens per sequence; origin = sequence mod GPUs (128: every GPU holds tokens).",
    )
    p.add_argument("--modes", default="analytic,des")
    p.add_argument("--run", choices=["analytic", "des"], help=argparse.SUPPRESS)
    p.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        options = {"dispatch": args.dispatch, "multipath": args.multipath}
        out = run_mode(
            args.run, args.trace, args.fat_tree_k, args.servers, options, args.step_tokens
        )
        print(json.dumps(out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.parquet"
        t0 = time.perf_counter()
        write_trace(
            trace, args.tokens, args.step_tokens, 8 * args.servers, args.seed, args.seq_len
        )
        print(f"trace: {args.tokens} tokens written in {time.perf_counter() - t0:.1f} s")
        results = {}
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--run", mode, "--trace", str(trace),
                   "--fat-tree-k", str(args.fat_tree_k), "--servers", str(args.servers),
                   "--step-tokens", str(args.step_tokens), "--dispatch", args.dispatch,
                   "--multipath", args.multipath]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[mode]
            print(f"{mode:>8}: {r['wall_s']:7.2f} s wall, {r['cpu_s']:7.2f} s CPU,"
                  f" peak RSS {r['peak_rss_mb']:5.0f} MB,"
                  f" hops/token {r['hops_per_token']:.3f}, network bytes {r['network_bytes']:.4g}")
        if "analytic" in results and "des" in results:
            ratio = results["des"]["cpu_s"] / results["analytic"]["cpu_s"]
            same = results["des"]["hops_per_token"] == results["analytic"]["hops_per_token"]
            print(f"DES / analytic CPU time: {ratio:.1f}x; same hops/token: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
