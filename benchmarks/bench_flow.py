"""Benchmark of flow mode against the DES on the simulator's reference replay (issue 15).

The reference replay of ``benchmarks/bench_simulator.py``: a synthetic DeepSeek-R1 trace
(8 steps of 32,768 tokens, 58 MoE layers, top-8 of 256) on a k=10 fat tree with 256 GPUs in
32 servers, round-robin layout, one micro-batch per step, two in flight.  The DES and flow
mode each run in a fresh subprocess that streams the trace; it reports CPU and wall time, and
how far flow mode's per-layer times, makespan and p99 token latency are from the DES's.

    PYTHONPATH=. python benchmarks/bench_flow.py [--tokens 262144] [--tolerances 0.01,0]
        [--dispatch all-to-all --multipath spray]

``--tolerances`` lists the ``flow_tolerance`` values to run (0: every event on its own).
A third subprocess times what both replays do outside the network's timing: stream the trace
and build every layer's traffic (:func:`simulator.layer_traffic.layer_traffic`, the same per
layer in both modes).  Flow mode cannot be faster than that part, so the speed-up it allows
(DES CPU / shared CPU) is printed as the ceiling of flow mode's speed-up, and each run's CPU
time beyond that part (its own engine's cost).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_simulator import _cpu_s, _layout, reference_arguments, write_trace

from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from traces.io import iter_trace, read_trace_meta


def run_one(mode: str, tolerance: float | None, trace: Path, layers_out: Path,
            traffic_options: dict[str, str], k: int, servers: int, step_tokens: int
            ) -> dict[str, float]:
    """One timed replay in this process (called in a subprocess by ``main``)."""
    from simulator.config import SimConfig
    from simulator.microbatches import by_steps
    from simulator.replay import replay
    from simulator.traffic_config import TrafficConfig

    routes = build_route_table(build_fat_tree(k, servers))
    m = read_trace_meta(trace)[0].model
    layout = _layout(m.num_moe_layers, m.num_routed_experts, routes.num_gpus)
    config = SimConfig(traffic=TrafficConfig(**traffic_options), mode=mode,
                       flow_tolerance=tolerance)
    t0, c0 = time.perf_counter(), _cpu_s()
    res = replay(by_steps(iter_trace(trace, step_tokens)), routes, layout, config)
    out = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0,
           "makespan_s": res.summary["makespan_s"], "latency_p99_s": res.summary["latency_p99_s"]}
    res.layers.to_parquet(layers_out)
    return out


def run_shared(trace: Path, traffic_options: dict[str, str], k: int, servers: int,
               step_tokens: int) -> dict[str, float]:
    """The part both replays share, timed alone: stream the trace, build each layer's traffic."""
    from simulator.config import SimConfig
    from simulator.engine import replay_stream
    from simulator.flow_paths import flow_fabric
    from simulator.layer_traffic import layer_traffic
    from simulator.microbatches import by_steps
    from simulator.traffic_config import TrafficConfig
    from traces.origins import resolve_origins

    routes = build_route_table(build_fat_tree(k, servers))
    m = read_trace_meta(trace)[0].model
    layout = _layout(m.num_moe_layers, m.num_routed_experts, routes.num_gpus)[:, :, None]
    config = SimConfig(traffic=TrafficConfig(**traffic_options), mode="flow")
    endpoints = flow_fabric(routes, config.traffic).multipath.endpoints
    t0, c0 = time.perf_counter(), _cpu_s()
    stream = replay_stream(by_steps(iter_trace(trace, step_tokens)), routes, layout, config)
    for block in stream:
        origins = resolve_origins(block, routes.num_gpus)
        for li in range(m.num_moe_layers):
            layer_traffic(block.experts[:, li, :], origins, layout[li], routes,
                          config.traffic.dispatch, endpoints)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    reference_arguments(p)
    p.add_argument("--tolerances", default="0.01", help="flow_tolerance values, comma-separated")
    p.add_argument("--run", help=argparse.SUPPRESS)  # mode[:tolerance] (subprocess)
    p.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--layers-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    options = {"dispatch": args.dispatch, "multipath": args.multipath}
    if args.run:
        mode, _, tol = args.run.partition(":")
        if mode == "shared":
            print(json.dumps(run_shared(args.trace, options, args.fat_tree_k, args.servers,
                                        args.step_tokens)))
            return 0
        out = run_one(mode, float(tol) if tol else None, args.trace, args.layers_out, options,
                      args.fat_tree_k, args.servers, args.step_tokens)
        print(json.dumps(out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.parquet"
        write_trace(trace, args.tokens, args.step_tokens, 8 * args.servers, args.seed)
        runs = ["des"] + [f"flow:{t}" for t in args.tolerances.split(",")]
        results, layers = {}, {}
        for run in [*runs, "shared"]:
            out_layers = Path(tmp) / f"layers-{run.replace(':', '-')}.parquet"
            cmd = [sys.executable, __file__, "--run", run, "--trace", str(trace),
                   "--layers-out", str(out_layers), "--fat-tree-k", str(args.fat_tree_k),
                   "--servers", str(args.servers), "--step-tokens", str(args.step_tokens),
                   "--dispatch", args.dispatch, "--multipath", args.multipath]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[run] = json.loads(done.stdout.strip().splitlines()[-1])
            if run != "shared":
                layers[run] = pd.read_parquet(out_layers)
        des = results["des"]
        d = layers["des"]["duration_s"].to_numpy()
        print(f"reference replay: {args.tokens} R1 tokens, {8 * args.servers} GPUs,"
              f" {args.dispatch}, {args.multipath}")
        print(f"{'run':>10} {'CPU s':>8} {'wall s':>8} {'speed-up':>9} {'layer diff':>22}"
              f" {'makespan':>9} {'p99':>9}")
        for run in runs:
            r = results[run]
            ratio = layers[run]["duration_s"].to_numpy() / d - 1
            span = f"{100 * ratio.min():+.1f} .. {100 * ratio.max():+.1f} %"
            mk = 100 * (r["makespan_s"] / des["makespan_s"] - 1)
            p99 = 100 * (r["latency_p99_s"] / des["latency_p99_s"] - 1)
            print(f"{run:>10} {r['cpu_s']:8.2f} {r['wall_s']:8.2f}"
                  f" {des['cpu_s'] / r['cpu_s']:8.1f}x {span:>22} {mk:+8.2f}% {p99:+8.2f}%")
            if run != "des":
                print(f"{'':>10} mean |layer diff| {100 * np.abs(ratio).mean():.2f} %")
        shared = results["shared"]
        print(f"shared part (trace stream + traffic build of every layer): {shared['cpu_s']:.2f}"
              f" s CPU, {shared['wall_s']:.2f} s wall: flow mode's speed-up is at most"
              f" {des['cpu_s'] / shared['cpu_s']:.1f}x")
        own = {run: results[run]["cpu_s"] - shared["cpu_s"] for run in runs}
        print("CPU s beyond the shared part: " + ", ".join(f"{run} {s:.2f}" for run, s in
                                                         own.items())
              + f"; 10x needs a flow run of at most {des['cpu_s'] / 10:.2f} s CPU in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
