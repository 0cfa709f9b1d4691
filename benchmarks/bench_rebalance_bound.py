"""Benchmark: how far the budgeted ``dedup`` walk is from the best layout within its moves.

    PYTHONPATH=. python benchmarks/bench_rebalance_bound.py [--kind K ...] [--layers 0,13,26]
        [--time-limit 60]

For each kind of drift of bench_rebalance_drift.py (the same traces, cluster, policy and
quarter budget), the ``dedup`` budget run is replayed and its re-placements recorded; the one
whose full re-fit gains the most on the chosen layers (on its window sample) is compared.  For
each chosen MoE layer, with ``k`` = the moves the walk spent in that layer, the exact
server-level model of :mod:`placement.migration_dedup_bound` (no balance goal: a relaxation) is
solved by HiGHS within ``--time-limit`` seconds, started from the walk's servers (so its
incumbent is never worse than the walk).  Printed per layer, as shares of the full re-fit's
gain in de-duplicated cost on the sample: the walk's, the MIP's
incumbent (a layout within ``k`` server moves; it may break the balance goal) and the MIP's
dual bound (no layout within ``k`` moves keeps more).  The LP relaxation of that model is
weak: on the phase drift's layer 0 its bound lies below the full re-fit's cost at 16 moves.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rebalance_drift import (  # noqa: E402
    BUDGET_SHARE,
    INTERVAL,
    KINDS,
    WINDOW,
    iter_drifts,
)

import experiments.rebalance as rebalance  # noqa: E402
from experiments.rebalance_config import RebalanceConfig  # noqa: E402
from placement.migration_dedup_bound import layer_cost, layer_tokens, solve_layer  # noqa: E402
from simulator.cluster.builders import build_fat_tree  # noqa: E402
from simulator.cluster.paths import build_route_table  # noqa: E402


def record_budget_run(path: Path, routes) -> list[dict]:  # noqa: ANN001
    """The budget run's re-placements: each call's problem, layouts, budget and result."""
    calls: list[dict] = []
    inner = rebalance.replace_dedup_with_moves

    def recording(problem, options, strategy, current, fresh, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        res = inner(problem, options, strategy, current, fresh, *args, **kw)
        calls.append(dict(problem=problem, options=options, current=current, fresh=fresh,
                          result=res.layout))
        return res

    base = RebalanceConfig(strategy="dedup", policy="periodic", interval_steps=INTERVAL,
                           window_steps=WINDOW)
    per = rebalance.run_rebalance(path, routes, base).timeline["bytes_migrated"]
    budget = BUDGET_SHARE * float(per[per > 0].mean())
    rebalance.replace_dedup_with_moves = recording
    try:
        rebalance.run_rebalance(path, routes, replace(base, move_budget_bytes=budget))
    finally:
        rebalance.replace_dedup_with_moves = inner
    return calls


def most_to_recover(calls: list[dict], layers: list[int]) -> int:
    """Index of the recorded re-placement whose full re-fit gains the most against the layout
    in force on the chosen layers (in-sample: the one with the most gain to keep)."""
    def gain(call: dict) -> float:
        p, gs = call["problem"], call["problem"].gpu_server
        return sum(layer_cost(tok, gs[call["current"].primary[li]])
                   - layer_cost(tok, gs[call["fresh"].primary[li]])
                   for li in layers for tok in (layer_tokens(p, li),))
    return int(np.argmax([gain(c) for c in calls]))


def compare_layers(call: dict, layers: list[int], time_limit_s: float, out=print) -> None:  # noqa: ANN001
    """The module docstring's rows for one recorded re-placement."""
    p, cur, fresh, walk = call["problem"], call["current"], call["fresh"], call["result"]
    gs = p.gpu_server
    total = np.zeros(5)
    for li in layers:
        tok = layer_tokens(p, li)
        c0, cf, cw = (layer_cost(tok, gs[lay.primary[li]]) for lay in (cur, fresh, walk))
        k = int((walk.primary[li] != cur.primary[li]).sum())
        t0 = time.process_time()
        bound, inc, _ = solve_layer(tok, gs[cur.primary[li]],
                                    np.bincount(gs) * p.max_per_gpu_per_layer, k,
                                    call["options"], start=gs[walk.primary[li]],
                                    time_limit_s=time_limit_s)
        full = c0 - cf
        total += (c0, cf, cw, inc, bound)
        if full <= 0:
            out(f"  layer {li:2d}: n/a, the full re-fit gains nothing here")
            continue
        out(f"  layer {li:2d}: walk {k:2d} moves keeps {(c0 - cw) / full:6.1%}; MIP within"
            f" {k} moves: incumbent {(c0 - inc) / full:6.1%}, bound {(c0 - bound) / full:6.1%}"
            f" of the re-fit's gain ({full / p.token_sample.num_tokens:.2f} per token;"
            f" {time.process_time() - t0:.0f} s CPU)")
    c0, cf, cw, inc, bound = total
    out(f"  chosen layers: walk {(c0 - cw) / (c0 - cf):.1%}, MIP incumbent"
        f" {(c0 - inc) / (c0 - cf):.1%}, bound {(c0 - bound) / (c0 - cf):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, action="append",
                    help="Run only these kinds of drift (repeatable; default: all).")
    ap.add_argument("--layers", help="MoE layer rows compared, a comma list (default: the"
                    " first, middle and last).")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="HiGHS seconds per layer's MIP.")
    args = ap.parse_args()
    routes = build_route_table(build_fat_tree(4, 4))
    t0 = time.process_time()
    for kind, path, _ in iter_drifts(args.kind or KINDS):
        calls = record_budget_run(path, routes)
        L = calls[0]["problem"].num_layers
        layers = ([int(v) for v in args.layers.split(",")] if args.layers
                  else [0, L // 2, L - 1])
        index = most_to_recover(calls, layers)
        print(f"{kind}: re-placement {index + 1} of {len(calls)}")
        compare_layers(calls[index], layers, args.time_limit)
        sys.stdout.flush()
    print(f"total {time.process_time() - t0:.1f} s CPU")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
