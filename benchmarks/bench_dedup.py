"""De-duplicated placement (`dedup`) against round-robin and EPLB: the targets of its issue.

    PYTHONPATH=. python benchmarks/bench_dedup.py [--sections esft,ep32,r1-256,paper]
        [--time-limit 60] [--paper-full] [--r1-load FILE] [--json out.json]

* ``esft``: real ESFT routing (DeepSeek-V2-Lite, 64 experts, top-6; ../shared/data) on 2 servers
  x 8 GPUs (k=4 fat tree).  Per task: fit on the even-numbered sequences, replay the odd ones
  (in-task, out of sample); and every layout replayed on every other task (cross-task).
  Origins: sequence id mod 16 (the simulator's rule).
* ``ep32``: DeepSeek-R1 (58 x 256, 8 groups, 4 per token) on 4 servers x 8 GPUs (k=4 fat tree),
  synthetic trace (seeded, one token per sequence), fit on 4,096 tokens, replay 4,096 others,
  with 0 and 32 redundant experts; the DES replays with de-duplicated dispatch.
* ``r1-256``: DeepSeek-R1 on 256 GPUs / 32 servers (k=10 fat tree: 25 servers in one pod, 7 in
  another), same trace sizes; solve time, bound and gap.
* ``--r1-load FILE``: the R1 sections' synthetic trace takes its per-layer expert popularity
  from a real SGLang load file (e.g. ``../shared/data/sglang-ep-statistics/prefill_in4096.json``)
  instead of the R1 preset.  The file holds counts only, so co-activation stays what the
  generator draws: group-limited routing (4 of 8 groups per token), no further modes.
* ``paper``: the paper study's grid (``--quick`` sizes unless ``--paper-full``) with
  de-duplicated dispatch and the rows round-robin, eplb and dedup.

Copies are de-duplicated remote copies per token per MoE layer (one per token and remote
server hosting any of its experts), counted on the replayed tokens; "vs rr" is the reduction
against round-robin.  Solve times are wall-clock seconds of ``solve_placement``, with the
CPU seconds of this process beside them (the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.pipeline import build_problem, origin_activation
from placement import SolverOptions, check_layout, solve_placement
from placement.dedup.evaluate import dedup_cost, imbalance, layer_gpu_loads
from placement.strategies import SUPPORTS
from placement.token_sample import token_sample
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.microbatches import microbatches
from simulator.traffic_config import TrafficConfig
from traces import RoutingTrace, SynthConfig, generate_trace, model_preset
from traces.importers.esft import iter_esft
from traces.load_stats import load_load_stats

ROOT = Path(__file__).resolve().parents[1]
ESFT = ROOT.parent / "shared" / "data" / "esft-routing"
TASKS = ("intent", "law", "summary", "translation")


def _concat(blocks: list[RoutingTrace]) -> RoutingTrace:
    b = blocks[0]
    return dataclasses.replace(
        b, experts=np.concatenate([x.experts for x in blocks]),
        seq_id=np.concatenate([x.seq_id for x in blocks]),
        position=np.concatenate([x.position for x in blocks]), gates=None, origin_gpu=None,
        step=None,
    )


def _place(problem, strategy: str, time_limit: float) -> tuple[Any, float, float]:
    """The result, and the wall and CPU seconds of ``solve_placement``."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = solve_placement(problem, strategy, SolverOptions(time_limit_s=time_limit))
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert res.is_ok and check_layout(problem, res.layout) == [], res.message
    return res, el, cpu


def _on(problem, trace: RoutingTrace, num_gpus: int):
    return dataclasses.replace(problem, token_sample=token_sample([trace], num_gpus))


def esft(time_limit: float) -> dict[str, Any]:
    routes = build_route_table(build_fat_tree(4, 2))
    G = routes.num_gpus
    traces = {t: _concat(list(iter_esft(ESFT / t))) for t in TASKS}
    layouts: dict[str, dict[str, Any]] = {}
    rows, cross = [], []
    for task, tr in traces.items():
        even = np.flatnonzero(tr.seq_id % 2 == 0)
        fit, rep = tr.take(even), tr.take(np.flatnonzero(tr.seq_id % 2 == 1))
        p, a, _ = origin_activation([fit], G)
        prob = build_problem(routes, tr.model, p, a, sample=token_sample([fit], G))
        out = _on(prob, rep, G)
        layouts[task] = {}
        row: dict[str, Any] = {"task": task, "fit_tokens": fit.num_tokens,
                               "replay_tokens": rep.num_tokens}
        for s in ("round-robin", "eplb", "dedup"):
            res, el, cpu = _place(prob, s, time_limit)
            layouts[task][s] = res.layout
            row[f"{s}_copies"] = dedup_cost(out, res.layout).copies_per_token_layer
            if s == "dedup":
                row.update(dedup_solve_s=el, dedup_cpu_s=cpu,
                           dedup_in_sample=res.info["copies_per_token_layer"],
                           gap=res.gap, ablation=res.info["ablation"])
        row["dedup_vs_rr_pct"] = 100 * (1 - row["dedup_copies"] / row["round-robin_copies"])
        rows.append(row)
        print(f"esft {task:12s} rr {row['round-robin_copies']:.3f} eplb {row['eplb_copies']:.3f}"
              f" dedup {row['dedup_copies']:.3f} ({row['dedup_vs_rr_pct']:.1f}% fewer than rr)"
              f" solve {row['dedup_solve_s']:.1f} s ({row['dedup_cpu_s']:.1f} s CPU)"
              f" gap {row['gap']:.2f}", flush=True)
    for a_task, lay in layouts.items():
        for b_task, tr in traces.items():
            if a_task == b_task:
                continue
            p = build_problem(routes, tr.model, np.full((26, 64), 6 / 64),
                              sample=token_sample([tr], G))
            rr = dedup_cost(p, lay["round-robin"]).copies_per_token_layer
            dd = dedup_cost(p, lay["dedup"]).copies_per_token_layer
            cross.append({"fit": a_task, "replay": b_task, "rr": rr, "dedup": dd,
                          "dedup_vs_rr_pct": 100 * (1 - dd / rr)})
            print(f"esft cross {a_task:>11s} -> {b_task:12s} rr {rr:.3f} dedup {dd:.3f}"
                  f" ({100 * (1 - dd / rr):.1f}% fewer)", flush=True)
    pct = [c["dedup_vs_rr_pct"] for c in cross]
    print(f"esft cross-task: mean {np.mean(pct):.1f}% min {np.min(pct):.1f}% max"
          f" {np.max(pct):.1f}% fewer copies than round-robin", flush=True)
    return {"in_task": rows, "cross_task": cross}


def _r1(k: int, servers: int, replicas: tuple[int, ...], strategies: tuple[str, ...],
        time_limit: float, des: bool, label: str, load: Path | None) -> list[dict[str, Any]]:
    model = model_preset("deepseek-r1")
    routes = build_route_table(build_fat_tree(k, servers))
    G = routes.num_gpus
    stats = None if load is None else load_load_stats(load, model)
    tr = generate_trace(SynthConfig(model, num_tokens=8192, seq_len=1, step_tokens=8192,
                                    num_gpus=G, seed=0, load_stats=stats))
    fit, rep = tr.take(slice(0, 4096)), tr.take(slice(4096, 8192))
    p, a, _ = origin_activation([fit], G)
    rep_mb = dataclasses.replace(rep, step=(np.arange(4096) // 1024).astype(np.int32))
    out_rows = []
    for r in replicas:
        prob = build_problem(routes, model, p, a, num_redundant=r,
                             sample=token_sample([fit], G))
        out = _on(prob, rep, G)
        for s in strategies:
            if s == "eplb" and (256 + r) % G or r and "replicas" not in SUPPORTS[s]:
                continue  # EPLB needs E + R divisible by G; round-robin refuses replicas
            res, el, cpu = _place(prob, s, time_limit)
            c = dedup_cost(out, res.layout)
            row: dict[str, Any] = {
                "setup": label, "popularity": "preset" if load is None else load.name,
                "replicas": r, "strategy": s, "solve_s": el, "cpu_s": cpu,
                "copies": c.copies_per_token_layer, "routes": c.routes_per_token_layer,
                "imbalance": imbalance(layer_gpu_loads(out, res.layout)),
                "gap": res.gap, "bound": res.info.get("lower_bound"),
            }
            if s.startswith("dedup"):
                row["ablation"] = res.info["ablation"]
            if des:
                sim = simulate(microbatches([rep_mb]), routes, res.layout.expert_gpus,
                               SimConfig(traffic=TrafficConfig(dispatch="deepep-normal")))
                row["p99_ms"] = sim.summary["latency_p99_s"] * 1e3
                row["des_copies"] = sim.summary["remote_copies_per_token_layer"]
            out_rows.append(row)
            print(f"{label} R={r:<3d} {s:12s} copies {row['copies']:.3f} routes"
                  f" {row['routes']:.3f} imbalance {row['imbalance']:.3f} solve {el:6.1f} s"
                  f" ({cpu:.1f} s CPU)"
                  + (f" gap {res.gap:.2f}" if s.startswith("dedup") else "")
                  + (f" p99 {row['p99_ms']:.3f} ms" if des else ""), flush=True)
    return out_rows


def paper(full: bool, time_limit: float) -> list[dict[str, Any]]:
    """The paper study's cells (every model, fabric and origin scenario) with a dedup row,
    replayed with de-duplicated dispatch; per cell: dedup fewer copies than round-robin and
    at most 1 % above eplb."""
    from experiments.studies.cell import evaluate_cell
    from experiments.studies.paper import paper_study
    from experiments.studies.spec import build_study

    study = paper_study(quick=not full, strategy_names=("round-robin", "eplb"))
    d = json.loads(json.dumps(study.definition))
    [(paths, values)] = d["axes"]  # one zipped axis: model, topology, trace, strategy
    i = paths.index("strategy")
    cells, seen = list(values), set()
    for v in values:
        key = json.dumps(v[:i] + v[i + 1:], sort_keys=True)
        if key not in seen:
            seen.add(key)
            cells.append(v[:i] + [{"name": "dedup", "options": {"time_limit_s": time_limit}}]
                         + v[i + 1:])
    raw = {**d["base"], "axes": {", ".join(paths): cells}}
    raw["sim"] = {**raw.get("sim", {}), "dispatch": "deepep-normal"}
    rows = []
    for cell in build_study(raw).cells:
        res = evaluate_cell(cell.config)
        row = {k: res.row[k] for k in ("model", "topology", "scenario", "strategy")}
        row.update(copies=res.row["remote_copies_per_token_layer"],
                   hops=res.row["hops_per_token"], p99_ms=res.row["latency_p99_ms"],
                   solve_s=res.row["solve_time_s"])
        rows.append(row)
        print(f"paper {row['model']:17s} {row['topology']:17s} {row['scenario']:16s}"
              f" {row['strategy']:12s} copies {row['copies']:.3f} hops {row['hops']:.1f}"
              f" p99 {row['p99_ms']:.3f} ms solve {row['solve_s']:.1f} s", flush=True)
    by: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in rows:
        by.setdefault((r["model"], r["topology"], r["scenario"]), {})[r["strategy"]] = r["copies"]
    for (m, t, sc), v in by.items():
        ok = v["dedup"] < v["round-robin"] and v["dedup"] <= 1.01 * v["eplb"]
        print(f"paper {m} {t} {sc}: dedup vs rr {100 * (1 - v['dedup'] / v['round-robin']):.1f}%"
              f" fewer, vs eplb {100 * (v['dedup'] / v['eplb'] - 1):+.2f}%"
              f" {'(target met)' if ok else '(TARGET MISSED)'}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="esft,ep32,r1-256,paper")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--paper-full", action="store_true")
    ap.add_argument("--no-des", action="store_true", help="Skip the DES replays of ep32.")
    ap.add_argument("--r1-load", type=Path, default=None,
                    help="SGLang load file the R1 trace's popularity is fitted to.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    sections = args.sections.split(",")
    if "esft" in sections:
        if ESFT.is_dir():
            out["esft"] = esft(args.time_limit)
        else:
            print(f"esft: skipped, {ESFT} not present")
    if "ep32" in sections:
        out["ep32"] = _r1(4, 4, (0, 32), ("round-robin", "eplb", "dedup"), args.time_limit,
                          not args.no_des, "r1-ep32", args.r1_load)
    if "r1-256" in sections:
        out["r1-256"] = _r1(10, 32, (0, 32), ("round-robin", "eplb", "dedup"),
                            args.time_limit, False, "r1-256", args.r1_load)
    if "paper" in sections:
        out["paper"] = paper(args.paper_full, args.time_limit)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
