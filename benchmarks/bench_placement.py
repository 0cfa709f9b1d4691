"""Placement speed at the paper's sizes: every strategy, DeepSeek-R1 and DeepSeekMoE-16B.

    PYTHONPATH=. python benchmarks/bench_placement.py [--stats SGLANG.json] [--repeat 3]
        [--time-limit 60] [--sizes r1,16b] [--strategies ilp-load,greedy,...] [--variants [V,...]]

Geometry: DeepSeek-R1 (58 MoE layers x 256 experts) on 256 GPUs in 32 servers of a partially
populated k=10 fat tree (25 servers in one pod, 7 in another, so server costs differ);
DeepSeekMoE-16B (27 x 64) on 64 GPUs in 8 servers of a k=6 fat tree (one pod, edge switches
holding 3, 3 and 2 servers).  Activation: R1 from SGLang statistics when ``--stats`` is given,
otherwise (and always for 16B) a seeded skewed synthetic p[l, i] (Zipf 0.9 over a random expert
order per layer).  ``ilp-origin`` gets per-origin activation: each server's tokens mix the
global load half and half with the server's own random permutation of it (tenants).
``--variants`` adds ilp-load with 32 / 8 redundant replicas (``origin-replicas``: ilp-origin,
tenant activation), eplb with one redundant copy per GPU and ilp-load with a 5% compute-balance
constraint (``--variants balance``: only that one).
Times are wall-clock seconds of ``solve_placement`` (model building, HiGHS, splitting over
GPUs, the independent cost), median of ``--repeat`` runs, and the CPU seconds of this
process for the same run (on a shared machine the wall time also counts other users' load).
``gap`` is the relative gap of the solver's objective to its proven lower bound (inf: none).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from experiments.pipeline import build_problem
from placement import STRATEGIES, SolverOptions, check_layout, solve_placement
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from traces import model_preset
from traces.load_stats import load_load_stats

VARIANTS = ("replicas", "origin-replicas", "eplb-replicas", "balance")
SIZES = {
    "r1": ("deepseek-r1", 10, 32),
    "16b": ("deepseek-moe-16b", 6, 8),
}


def synthetic_activation(layers: int, experts: int, top_k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.arange(1, experts + 1, dtype=np.float64) ** -0.9
    rows = np.stack([rng.permutation(base) for _ in range(layers)])
    return rows / rows.sum(axis=1, keepdims=True) * top_k


def tenant_activation(act: np.ndarray, gpu_server: np.ndarray, seed: int) -> np.ndarray:
    """a[l, i, o]: tokens of each server mix the global load with their own permutation of it."""
    rng = np.random.default_rng(seed)
    L, E = act.shape
    S = int(gpu_server.max()) + 1
    own = np.stack([np.stack([rng.permutation(act[li]) for li in range(L)]) for _ in range(S)])
    per_server = 0.5 * act[None] + 0.5 * own  # [S, L, E], rows still sum to top_k
    G = len(gpu_server)
    return np.transpose(per_server[gpu_server], (1, 2, 0)) / G


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--stats", default=None, help="SGLang logical_count JSON for the R1 size.")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="r1,16b")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default="",
                    help=f"Variants to add (default with the flag: all of {','.join(VARIANTS)}).")
    args = ap.parse_args()
    options = SolverOptions(time_limit_s=args.time_limit, mip_rel_gap=1e-4, threads=args.threads)
    print(f"{'size':5s} {'strategy':24s} {'status':10s} {'time_s':>8s} {'cpu_s':>8s}"
          f" {'objective':>10s} {'gap':>8s}  note")
    for size in args.sizes.split(","):
        name, k, servers = SIZES[size]
        model = model_preset(name)
        routes = build_route_table(build_fat_tree(k, servers))
        if size == "r1" and args.stats:
            act = load_load_stats(args.stats, model).activation()
        else:
            act = synthetic_activation(model.num_moe_layers, model.num_routed_experts,
                                       model.top_k, seed=0)
        runs = [(s, {}) for s in args.strategies.split(",")]
        extra = 32 if size == "r1" else 8
        gpus = routes.num_gpus  # EPLB needs (experts + redundant) divisible by the GPUs
        variants = {"replicas": ("ilp-load", {"num_redundant": extra}),
                    "origin-replicas": ("ilp-origin", {"num_redundant": extra}),
                    "eplb-replicas": ("eplb", {"num_redundant": gpus}),
                    "balance": ("ilp-load", {"balance_eps": 0.05})}
        runs += [variants[v] for v in args.variants.split(",") if v]
        for strategy, kw in runs:
            if strategy == "ilp-origin":
                oa = tenant_activation(act, routes.cluster.gpu_server, seed=1)
                problem = build_problem(routes, model, oa.sum(axis=2), oa, **kw)
            else:
                problem = build_problem(routes, model, act, **kw)
            times, cpus = [], []
            res = None
            for _ in range(args.repeat if not kw and strategy != "ilp-bottleneck" else 1):
                t0, c0 = time.perf_counter(), time.process_time()
                res = solve_placement(problem, strategy, options)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            assert res is not None
            ok = res.layout is not None and check_layout(problem, res.layout) == []
            label = strategy + "".join(f" {k_}={v}" for k_, v in kw.items())
            print(f"{size:5s} {label:24s} {res.status.value:10s} {statistics.median(times):8.3f}"
                  f" {statistics.median(cpus):8.3f} {res.objective:10.2f} {res.gap:8.2g}"
                  f"  {'valid' if ok else 'INVALID'};"
                  f" {res.message[:70]}", flush=True)


if __name__ == "__main__":
    main()
