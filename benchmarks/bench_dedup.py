"""De-duplicated placement (`dedup`) against round-robin and EPLB: the targets of its issue.

    PYTHONPATH=. python benchmarks/bench_dedup.py [--sections esft,ep32,r1-256,paper]
        [--time-limit 60] [--paper-full] [--r1-load FILE] [--esft-replicas R]
        [--esft-parts in-task,cross-task] [--json out.json]

* ``esft``: real ESFT routing (DeepSeek-V2-Lite, 64 experts, top-6; ../shared/data) on 2 servers
  x 8 GPUs (k=4 fat tree).  Per task: fit on the even-numbered sequences, replay the odd ones
  (in-task, out of sample); and, fitted on every sequence of a task, replayed on every other
  task (cross-task).
  Origins: sequence id mod 16 (the simulator's rule).  Rows: round-robin, eplb, dedup, and
  dedup with ``flatten_popularity=1`` (fitted for another workload: the cross-task use);
  ``--esft-replicas R`` adds dedup and eplb with R redundant experts per layer (eplb with the
  same replicas is the memory-equal baseline), in task and across tasks, with the balance
  guard per row (per layer, dedup's busiest GPU within 5 % of eplb's on the replayed tokens);
  ``--esft-parts cross-task`` runs only the cross-task part.
* ``ep32``: DeepSeek-R1 (58 x 256, 8 groups, 4 per token) on 4 servers x 8 GPUs (k=4 fat tree),
  synthetic trace (seeded, one token per sequence), fit on 4,096 tokens, replay 4,096 others,
  with 0 and 32 redundant experts; the DES replays with de-duplicated dispatch.
  The fat tree's NICs are pooled: the DES replays ``deepep-normal`` in the three aggregated
  stages of every pooled plan.
* ``ep32-rail``: the same on DeepSeek's own EP32 unit (preset ``deepseek-prefill-ep32``:
  rail-optimized, a NIC per GPU), where ``deepep-normal`` sends per origin GPU and forwards
  over NVLink as DeepEP's kernels do (not in the default sections).
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
from placement.dedup.solve import BALANCE_SLACK
from placement.strategies import SUPPORTS
from placement.token_sample import token_sample
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.cluster.presets import build_preset
from simulator.cluster.topology import ClusterSpec
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


def _place(problem, strategy: str, time_limit: float,
           flatten: float = 0.0) -> tuple[Any, float, float]:
    """The result, and the wall and CPU seconds of ``solve_placement``."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = solve_placement(problem, strategy, SolverOptions(time_limit_s=time_limit,
                                                           flatten_popularity=flatten))
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert res.is_ok and check_layout(problem, res.layout) == [], res.message
    return res, el, cpu


def _on(problem, trace: RoutingTrace, num_gpus: int):
    return dataclasses.replace(problem, token_sample=token_sample([trace], num_gpus))


FLAT = {"dedup": 0.0, "dedup-flat": 1.0}  # dedup rows: flatten_popularity of each


def _esft_problem(routes, tr: RoutingTrace, G: int, replicas: int = 0):
    p, a, _ = origin_activation([tr], G)
    return build_problem(routes, tr.model, p, a, num_redundant=replicas,
                         sample=token_sample([tr], G))


def _esft_in_task(routes, task: str, tr: RoutingTrace, time_limit: float,
                  replicas: int) -> dict[str, Any]:
    """Fit on the even-numbered sequences, replay the odd ones."""
    G = routes.num_gpus
    fit = tr.take(np.flatnonzero(tr.seq_id % 2 == 0))
    rep = tr.take(np.flatnonzero(tr.seq_id % 2 == 1))
    prob = _esft_problem(routes, fit, G)
    out = _on(prob, rep, G)
    row: dict[str, Any] = {"task": task, "fit_tokens": fit.num_tokens,
                           "replay_tokens": rep.num_tokens}
    for s in ("round-robin", "eplb", *FLAT):
        res, el, cpu = _place(prob, s.removesuffix("-flat"), time_limit, FLAT.get(s, 0.0))
        row[f"{s}_copies"] = dedup_cost(out, res.layout).copies_per_token_layer
        if s == "dedup":
            row.update(dedup_solve_s=el, dedup_cpu_s=cpu,
                       dedup_in_sample=res.info["copies_per_token_layer"],
                       gap=res.gap, ablation=res.info["ablation"])
    for s in FLAT:
        row[f"{s}_vs_rr_pct"] = 100 * (1 - row[f"{s}_copies"] / row["round-robin_copies"])
    print(f"esft {task:12s} rr {row['round-robin_copies']:.3f} eplb {row['eplb_copies']:.3f}"
          f" dedup {row['dedup_copies']:.3f} ({row['dedup_vs_rr_pct']:.1f}% fewer than rr)"
          f" flattened {row['dedup-flat_copies']:.3f} ({row['dedup-flat_vs_rr_pct']:.1f}%)"
          f" solve {row['dedup_solve_s']:.1f} s ({row['dedup_cpu_s']:.1f} s CPU)"
          f" gap {row['gap']:.2f}", flush=True)
    if replicas:  # the same fit with redundant experts (round-robin has none)
        pr = _esft_problem(routes, fit, G, replicas)
        res, el, cpu = _place(pr, "dedup", time_limit)
        ref = _place(pr, "eplb", time_limit)[0].layout
        rp = _on(pr, rep, G)
        row.update(_with_replicas(rp, res.layout, ref, row["round-robin_copies"], replicas))
        print(f"esft {task:12s} R={replicas}" + _replica_line(row)
              + f" solve {el:.1f} s ({cpu:.1f} s CPU)", flush=True)
    return row


def _with_replicas(p, lay, ref, rr_copies: float, replicas: int) -> dict[str, Any]:
    """dedup and eplb with the same replicas (the memory-equal baseline) on the tokens of
    ``p``, and the balance guard: per layer, dedup's busiest GPU over the mean within 5 % of
    EPLB's (``BALANCE_SLACK``) on these tokens."""
    c, e = dedup_cost(p, lay).copies_per_token_layer, dedup_cost(p, ref).copies_per_token_layer
    loads, ref_loads = layer_gpu_loads(p, lay), layer_gpu_loads(p, ref)
    within = loads.max(axis=1) <= (1 + BALANCE_SLACK) * ref_loads.max(axis=1) + 1e-9
    return {"replicas": replicas, "dedup_replicas_copies": c, "eplb_replicas_copies": e,
            "dedup_replicas_vs_rr_pct": 100 * (1 - c / rr_copies),
            "dedup_replicas_vs_eplb_pct": 100 * (1 - c / e),
            "dedup_replicas_imbalance": imbalance(loads),
            "eplb_replicas_imbalance": imbalance(ref_loads),
            "guard_layers_within": int(within.sum()), "guard_layers": int(within.size)}


def _replica_line(r: dict[str, Any]) -> str:
    return (f" dedup {r['dedup_replicas_copies']:.3f}"
            f" ({r['dedup_replicas_vs_rr_pct']:.1f}% fewer than rr without replicas,"
            f" {r['dedup_replicas_vs_eplb_pct']:.1f}% fewer than eplb with them:"
            f" {r['eplb_replicas_copies']:.3f}) imbalance {r['dedup_replicas_imbalance']:.3f}"
            f" vs eplb {r['eplb_replicas_imbalance']:.3f}, guard (busiest GPU <= 1.05 x"
            f" eplb's) in {r['guard_layers_within']} of {r['guard_layers']} layers")


def esft(time_limit: float, replicas: int, parts: tuple[str, ...]) -> dict[str, Any]:
    routes = build_route_table(build_fat_tree(4, 2))
    G = routes.num_gpus
    traces = {t: _concat(list(iter_esft(ESFT / t))) for t in TASKS}
    rows = ([_esft_in_task(routes, t, tr, time_limit, replicas) for t, tr in traces.items()]
            if "in-task" in parts else [])
    if "cross-task" not in parts:
        return {"in_task": rows}
    # Across tasks a layout is fitted on every sequence of its task (a user fitting on one
    # workload to serve another has no reason to hold any out) and replayed on all of another.
    layouts: dict[str, dict[str, Any]] = {}
    for task, tr in traces.items():
        prob = _esft_problem(routes, tr, G)
        layouts[task] = {s: _place(prob, s.removesuffix("-flat"), time_limit,
                                   FLAT.get(s, 0.0))[0].layout
                         for s in ("round-robin", *FLAT)}
        if replicas:  # dedup and eplb with the same replicas, fitted on the same tokens
            pr = _esft_problem(routes, tr, G, replicas)
            layouts[task].update({f"{s} R": _place(pr, s, time_limit)[0].layout
                                  for s in ("dedup", "eplb")})
    cross = []
    for a_task, lay in layouts.items():
        for b_task, tr in traces.items():
            if a_task == b_task:
                continue
            p = _esft_problem(routes, tr, G)
            c: dict[str, Any] = {"fit": a_task, "replay": b_task}
            c.update({s: dedup_cost(p, lay[s]).copies_per_token_layer for s in lay
                      if not s.endswith(" R")})
            c.update({f"{s}_vs_rr_pct": 100 * (1 - c[s] / c["round-robin"]) for s in FLAT})
            line = ""
            if replicas:
                c.update(_with_replicas(_esft_problem(routes, tr, G, replicas), lay["dedup R"],
                                        lay["eplb R"], c["round-robin"], replicas))
                line = f"; R={replicas}" + _replica_line(c)
            cross.append(c)
            print(f"esft cross {a_task:>11s} -> {b_task:12s} rr {c['round-robin']:.3f}"
                  + "".join(f" {s} {c[s]:.3f} ({c[f'{s}_vs_rr_pct']:.1f}% fewer)"
                            for s in FLAT) + line, flush=True)
    keys = {s: f"{s}_vs_rr_pct" for s in FLAT}
    if replicas:
        keys |= {f"dedup R={replicas} vs rr": "dedup_replicas_vs_rr_pct",
                 f"dedup R={replicas} vs eplb R={replicas}": "dedup_replicas_vs_eplb_pct"}
    for s, key in keys.items():
        pct = [c[key] for c in cross]
        print(f"esft cross-task {s}: mean {np.mean(pct):.1f}% min {np.min(pct):.1f}% max"
              f" {np.max(pct):.1f}% fewer copies, >= 8 % in"
              f" {sum(x >= 8 for x in pct)} of {len(pct)}", flush=True)
    if replicas:
        print(f"esft cross-task R={replicas}: balance guard in"
              f" {sum(c['guard_layers_within'] for c in cross)} of"
              f" {sum(c['guard_layers'] for c in cross)} replayed layers", flush=True)
    return {"in_task": rows, "cross_task": cross}


def _r1(cluster: ClusterSpec, replicas: tuple[int, ...], strategies: tuple[str, ...],
        time_limit: float, des: bool, label: str, load: Path | None) -> list[dict[str, Any]]:
    model = model_preset("deepseek-r1")
    routes = build_route_table(cluster)
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
    ap.add_argument("--esft-replicas", type=int, default=0,
                    help="Also fit dedup with this many redundant experts per ESFT layer.")
    ap.add_argument("--esft-parts", default="in-task,cross-task",
                    help="Which ESFT parts to run: in-task, cross-task or both.")
    ap.add_argument("--r1-load", type=Path, default=None,
                    help="SGLang load file the R1 trace's popularity is fitted to.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    sections = args.sections.split(",")
    if "esft" in sections:
        if ESFT.is_dir():
            out["esft"] = esft(args.time_limit, args.esft_replicas,
                               tuple(args.esft_parts.split(",")))
        else:
            print(f"esft: skipped, {ESFT} not present")
    if "ep32" in sections:
        out["ep32"] = _r1(build_fat_tree(4, 4), (0, 32), ("round-robin", "eplb", "dedup"),
                          args.time_limit, not args.no_des, "r1-ep32", args.r1_load)
    if "ep32-rail" in sections:  # DeepSeek's own EP32 unit: per-GPU NICs on rails
        out["ep32-rail"] = _r1(build_preset("deepseek-prefill-ep32"), (0, 32),
                               ("round-robin", "eplb", "dedup"), args.time_limit,
                               not args.no_des, "r1-ep32-rail", args.r1_load)
    if "r1-256" in sections:
        out["r1-256"] = _r1(build_fat_tree(10, 32), (0, 32), ("round-robin", "eplb", "dedup"),
                            args.time_limit, False, "r1-256", args.r1_load)
    if "paper" in sections:
        out["paper"] = paper(args.paper_full, args.time_limit)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
