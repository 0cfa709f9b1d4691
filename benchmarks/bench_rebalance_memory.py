"""Benchmark of a DES-mode rebalance's memory: peak RSS against a static DES replay, by length.

    PYTHONPATH=. python benchmarks/bench_rebalance_memory.py [--tokens 32768 65536]

For each trace length: a DeepSeek-R1 trace (steps of 4,096 tokens) on a 4-server fat tree (32
GPUs), and in a child process each (so its peak RSS, ``ru_maxrss`` via ``os.wait4``, is its
own):

static    ``simulator.replay.replay`` of the whole trace streamed block by block (the DES),
          with an ``ilp-load`` layout fitted on the first 4 steps;
rebalance ``run_rebalance`` in DES mode, ``ilp-load``, periodic, window and interval 4 steps
          (a DES replay per window and a DES-measured stall per rebalance).

Both replay with one copy per route (``all-to-all``, the replay's default; the rebalance with
``server_dedup=False``), so that the two DES runs move the same messages.

Memory is bounded when the rebalance's peak RSS does not grow with the trace length (a window
holds its own tokens, the look-back its counts and sample).  Prints one line per run: tokens,
run, CPU time, wall time, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP_TOKENS = 4096
RUNS = ("static", "rebalance")


def _child(run: str, path: Path) -> dict[str, float]:
    from experiments.rebalance import run_rebalance
    from experiments.rebalance_config import RebalanceConfig
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table

    routes = build_route_table(build_fat_tree(4, 4))
    t0 = time.process_time()
    if run == "static":
        from experiments.pipeline import build_problem
        from placement import solve_placement
        from simulator.config import SimConfig
        from simulator.replay import replay
        from traces.io import iter_trace

        first = next(iter_trace(path))
        assert first.step is not None
        fit = first.take(first.step < int(first.step[0]) + 4)
        counts = np.zeros((fit.model.num_moe_layers, fit.model.num_routed_experts))
        for li in range(fit.model.num_moe_layers):
            counts[li] = np.bincount(fit.experts[:, li, :].ravel(),
                                     minlength=fit.model.num_routed_experts)
        problem = build_problem(routes, fit.model, counts / fit.num_tokens)
        layout = solve_placement(problem, "ilp-load").layout
        assert layout is not None
        res = replay(iter_trace(path), routes, layout.expert_gpus, SimConfig(mode="des"))
        out = {"p99_s": float(res.summary["latency_p99_s"])}
    else:
        t = run_rebalance(path, routes, RebalanceConfig(
            strategy="ilp-load", policy="periodic", interval_steps=4, window_steps=4,
            mode="des", server_dedup=False)).timeline
        out = {"windows": float(len(t)), "p99_s": float(t["latency_p99_s"].max())}
    out["cpu_s"] = time.process_time() - t0
    return out


def _measure(run: str, path: Path) -> tuple[dict[str, float], float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", run, str(path)],
                            stdout=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run {run} failed")
    return json.loads(out), time.perf_counter() - t0, usage.ru_maxrss / 1024  # KiB -> MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[32768, 65536])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]))))
        return
    from traces import SynthConfig, model_preset
    from traces.io import write_blocks
    from traces.synthetic import iter_synthetic

    m = model_preset("deepseek-r1")
    with tempfile.TemporaryDirectory() as d:
        for n in args.tokens:
            path = Path(d) / f"r1_{n}.parquet"
            write_blocks(path, iter_synthetic(SynthConfig(
                m, num_tokens=n, seq_len=64, step_tokens=STEP_TOKENS, num_gpus=32, seed=0)))
            for run in RUNS:
                res, wall, rss = _measure(run, path)
                print(f"{n:8,d} tokens  {run:9s}  {res['cpu_s']:7.1f} s CPU  {wall:7.1f} s wall"
                      f"  peak RSS {rss:7.0f} MiB  {json.dumps(res)}", flush=True)


if __name__ == "__main__":
    main()
