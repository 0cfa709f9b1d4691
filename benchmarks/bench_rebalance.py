"""Benchmark of rebalancing: gain recovered per byte moved on a workload shift, and run cost.

    PYTHONPATH=. python benchmarks/bench_rebalance.py [--tokens 1048576] [--part P ...]

1. ``shift``: DeepSeekMoE-16B on a 4-server fat tree (32 GPUs); two tenants on server halves
   swap halves at mid-trace.  ilp-origin under static, periodic (full re-placement), periodic
   with a move budget of a quarter of what the full re-placement moves per rebalance and
   periodic with a move price only (``--move-weight``, no budget).  Reports the hop saving each
   recovers against static after the shift, the balance gain, the bytes moved and the CPU time
   (the target: the migration-aware policy keeps >= 80% of the full gains moving <= 25%).
2. ``dedup``: the same trace under ``dedup`` (its own objective: de-duplicated remote copies),
   static, periodic and periodic within the same quarter budget; also what periodic would move
   with its re-fits relabelled per layer and server (the same copies and per-layer balance).
3. ``eplb``: the same trace under ``eplb`` (its goal: balance), static, periodic, the quarter
   budget and a price (the fewest moves that meet the plain re-fit's balance).
4. ``cost``: a DeepSeek-R1 trace of ``--tokens`` tokens on 32 GPUs, analytic mode, static vs
   periodic with 32 rebalances (ilp-load): CPU time of each (target: within 5x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.rebalance import run_rebalance  # noqa: E402
from experiments.rebalance_config import RebalanceConfig  # noqa: E402
from placement.migration import expert_weight_bytes  # noqa: E402
from simulator.cluster.builders import build_fat_tree  # noqa: E402
from simulator.cluster.paths import build_route_table  # noqa: E402
from traces import SynthConfig, generate_trace, model_preset  # noqa: E402
from traces.io import write_blocks  # noqa: E402
from traces.synthetic import TenantSpec, iter_synthetic  # noqa: E402

MOVE_WEIGHT = 0.1  # the price-only run: a weight byte-hop moved costs 0.1 traffic byte-hop


def _shift_trace(d: Path) -> tuple[Path, int]:
    """The workload-shift trace and the step at which the tenants swap server halves."""
    m = model_preset("deepseek-moe-16b")
    lo, hi = tuple(range(16)), tuple(range(16, 32))

    def phase(chat, code):  # noqa: ANN001, ANN202
        return generate_trace(SynthConfig(
            m, num_tokens=16384, seq_len=16, step_tokens=256, num_gpus=32, seed=1,
            tenants=(TenantSpec(1.0, chat, 0.9, name="chat"), TenantSpec(1.0, code, 1.3))))

    a, b = phase(lo, hi), phase(hi, lo)
    b = replace(b, step=b.step + a.step.max() + 1, seq_id=b.seq_id + a.seq_id.max() + 1)
    path = d / "shift.parquet"
    write_blocks(path, [a, b])
    return path, int(a.step.max()) + 1


def shift(d: Path, strategy: str = "ilp-origin") -> None:
    path, shift_step = _shift_trace(d)
    m = model_preset("deepseek-moe-16b")
    routes = build_route_table(build_fat_tree(4, 4))
    base = RebalanceConfig(strategy=strategy, policy="static", interval_steps=16,
                           window_steps=16)
    runs, cpu, layouts = {}, {}, {}

    def run(name: str, config: RebalanceConfig) -> None:
        t0 = time.process_time()
        res = run_rebalance(path, routes, config)
        runs[name], layouts[name] = res.timeline, res.layouts
        cpu[name] = time.process_time() - t0

    run("static", base)
    run("periodic", replace(base, policy="periodic"))
    per = runs["periodic"]["bytes_migrated"]
    budget = 0.25 * float(per[per > 0].mean())
    run("budget", replace(base, policy="periodic", move_budget_bytes=budget))
    if strategy != "dedup":
        run("price", replace(base, policy="periodic", move_weight=MOVE_WEIGHT))
    after = runs["static"]["step_start"] >= shift_step
    static_hops = runs["static"]["hops_per_token"][after].mean()
    full_gain = static_hops - runs["periodic"]["hops_per_token"][after].mean()
    static_imb = runs["static"]["gpu_load_max_over_mean"][after].mean()
    full_imb_gain = static_imb - runs["periodic"]["gpu_load_max_over_mean"][after].mean()
    print(f"shift ({strategy}): 16B, 32 GPUs, tenants swap at step {shift_step}; expert ="
          f" {expert_weight_bytes(m, 1) / 1e6:.2f} MB at FP8;"
          f" budget {budget / 1e9:.2f} GB/rebalance")
    for name, t in runs.items():
        gain = static_hops - t["hops_per_token"][after].mean()
        imb = t["gpu_load_max_over_mean"][after].mean()
        print(f"  {name:9s} hops/token after the shift {t['hops_per_token'][after].mean():7.1f}"
              f"  gain kept {gain / full_gain * 100 if full_gain else 0:5.1f}%"
              f"  moved {t['bytes_migrated'].sum() / 1e9:7.2f} GB"
              f" ({t['bytes_migrated'].sum() / max(per.sum(), 1) * 100:5.1f}% of periodic's)"
              f"  copies {t['remote_copies_per_token_layer'].mean():.3f}"
              f"  GPU max/mean after {t['gpu_load_max_over_mean'][after].mean():.3f}"
              f" (balance gain kept {_share(static_imb - imb, full_imb_gain)})"
              f"  {cpu[name]:.1f} s CPU")
    if strategy == "dedup":  # its own objective: the de-duplicated copies
        moved = _relabelled_bytes(routes, m, layouts["periodic"])
        print(f"  periodic relabelled per layer and server would move {moved / 1e9:.2f} GB;"
              f" the budget run moved {runs['budget']['bytes_migrated'].sum() / moved * 100:.1f}%"
              " of that")
        c0 = runs["static"]["remote_copies_per_token_layer"][after].mean()
        full = c0 - runs["periodic"]["remote_copies_per_token_layer"][after].mean()
        for name, t in runs.items():
            c = t["remote_copies_per_token_layer"][after].mean()
            print(f"  {name:9s} de-duplicated copies per token-layer after the shift {c:.4f}"
                  f" (gain kept {_share(c0 - c, full)})")


def _relabelled_bytes(routes, model, layouts) -> float:  # noqa: ANN001
    """Weight bytes periodic's chain of layouts moves when every re-fit is relabelled per layer
    and server against the (relabelled) layout before it."""
    from experiments.pipeline import build_problem
    from placement.migration import plan_migration
    from placement.migration_walk import relabel_within_servers
    from placement.problem import SolverOptions

    p = np.ones((model.num_moe_layers, model.num_routed_experts))
    problem = build_problem(routes, model, p)
    chain = [layouts[k] for k in sorted(layouts)]
    prev, moves = chain[0], 0
    for new in chain[1:]:
        new = relabel_within_servers(problem, prev, new, SolverOptions())
        moves += plan_migration(prev, new, problem.distance).num_moves
        prev = new
    return moves * expert_weight_bytes(model, RebalanceConfig().weight_bytes_per_param)


def _share(gain: float, full: float) -> str:
    """A gain as a share of the full re-placement's, or why there is none to share."""
    if full <= 0:
        return f"n/a: full re-placement changes it by {-full:+.3f}"
    return f"{gain / full * 100:.1f}%"


def cost(d: Path, tokens: int) -> None:
    m = model_preset("deepseek-r1")
    cfg = SynthConfig(m, num_tokens=tokens, seq_len=64, step_tokens=max(64, tokens // 68),
                      num_gpus=32, seed=0)
    path = d / "r1.parquet"
    write_blocks(path, iter_synthetic(cfg))
    routes = build_route_table(build_fat_tree(4, 4))
    # 68 steps: the first 2 fit, then 33 windows of 2 steps: 32 rebalances
    base = RebalanceConfig(strategy="ilp-load", policy="static", interval_steps=2, window_steps=2)
    out = {}
    for name, c in (("static", base), ("periodic", replace(base, policy="periodic"))):
        t0 = time.process_time()
        t = run_rebalance(path, routes, c).timeline
        out[name] = time.process_time() - t0
        print(f"  {name:9s} {len(t)} windows, {int((t.decision == 'rebalance').sum())}"
              f" rebalances: {out[name]:.1f} s CPU")
    print(f"  periodic / static = {out['periodic'] / out['static']:.2f}x (target <= 5x)")


PARTS = ("shift", "dedup", "eplb", "cost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--part", choices=PARTS, action="append",
                    help="Run only these parts (repeatable; default: all).")
    args = ap.parse_args()
    parts = args.part or PARTS
    with tempfile.TemporaryDirectory() as d:
        if "shift" in parts:
            shift(Path(d))
        if "dedup" in parts:
            shift(Path(d), "dedup")
        if "eplb" in parts:
            shift(Path(d), "eplb")
        if "cost" in parts:
            print(f"cost: {args.tokens:,} R1 tokens, 32 GPUs, analytic")
            cost(Path(d), args.tokens)


if __name__ == "__main__":
    main()
