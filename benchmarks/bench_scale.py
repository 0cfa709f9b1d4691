"""Benchmark: route tables and counting at thousands of GPUs, and DES cost per chunk-hop.

    PYTHONPATH=. python benchmarks/bench_scale.py [--quick] [--plot docs/img/des-cost-per-hop.png]

Part 1 (issue 15's targets): k-ary fat trees of 8-GPU servers -- 1,024 GPUs (k=8, 128 servers),
4,096 GPUs (k=16, 512 servers), 16,384 GPUs (k=32, 2,048 servers).  Each case runs in a fresh
subprocess: build the cluster, build the route table, generate a synthetic DeepSeek-R1 trace
(the project's generator, R1 preset, origins dealt over the cluster) and count it with the
analytic counter (round-robin layout, default dispatch and multipath, micro-batches of 4,096
tokens).  It reports wall and CPU seconds of the route table and of the count, and the
process's peak resident memory (``ru_maxrss``).

Part 2: the DES on 256, 1,024 and 4,096 GPUs (fat trees k=10/8/16) replaying the same number of
tokens per GPU; its CPU seconds per chunk-hop (one chunk crossing one link direction, summed
over the directions the replay simulates) shows whether the event cost grows with the
cluster.  ``--plot`` draws it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COUNT_CASES = [(8, 128, 8_192), (16, 512, 16_384), (32, 2_048, 16_384)]
DES_CASES = [(10, 32), (8, 128), (16, 512)]
DES_TOKENS_PER_GPU = 4
MICROBATCH_TOKENS = 4_096


def _clock() -> tuple[float, float]:
    t = os.times()
    return time.perf_counter(), t.user + t.system


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _trace(num_gpus: int, tokens: int) -> Any:
    from traces.model import model_preset
    from traces.synthetic.config import SynthConfig
    from traces.synthetic.generate import generate_trace

    return generate_trace(SynthConfig(model=model_preset("deepseek-r1"), num_tokens=tokens,
                                      num_gpus=num_gpus, step_tokens=MICROBATCH_TOKENS))


def _layout(num_gpus: int) -> Any:
    import numpy as np

    return (np.arange(58)[:, None] * 256 + np.arange(256)[None, :]) % num_gpus


def count_case(k: int, servers: int, tokens: int) -> dict[str, float]:
    from simulator.analytic import count_traffic
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.paths import build_route_table

    cluster = build_fat_tree(k, servers)
    t = _clock()
    routes = build_route_table(cluster)
    route_wall, route_cpu = _since(t)
    trace = _trace(cluster.num_gpus, tokens)
    t = _clock()
    res = count_traffic([trace], routes, _layout(cluster.num_gpus),
                        microbatch_tokens=MICROBATCH_TOKENS)
    count_wall, count_cpu = _since(t)
    return {"gpus": cluster.num_gpus, "servers": servers, "tokens": tokens,
            "route_wall_s": route_wall, "route_cpu_s": route_cpu,
            "count_wall_s": count_wall, "count_cpu_s": count_cpu,
            "hops_per_token": res.hops_per_token}


def des_case(k: int, servers: int) -> dict[str, float]:
    import numpy as np

    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.link_load_classes import link_classes
    from simulator.cluster.multipath import MultipathRoutes
    from simulator.cluster.multipath_modes import DEFAULT_MULTIPATH
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig
    from simulator.engine import simulate

    cluster = build_fat_tree(k, servers)
    routes = build_route_table(cluster)
    tokens = DES_TOKENS_PER_GPU * cluster.num_gpus
    trace = _trace(cluster.num_gpus, tokens)
    t = _clock()
    sim = simulate([trace], routes, _layout(cluster.num_gpus),
                   SimConfig(microbatch_tokens=MICROBATCH_TOKENS))
    wall, cpu = _since(t)
    # links of one class share one simulated link direction: count each class once
    mp = MultipathRoutes(routes, DEFAULT_MULTIPATH)
    bw = np.repeat([lk.bandwidth_bytes_per_s for lk in cluster.links], 2)
    lat = np.repeat([lk.latency_s for lk in cluster.links], 2)
    cls = link_classes(mp.class_entries(), bw, lat)
    chunk_hops = int(sim.links["chunks"].to_numpy()[cls == np.arange(cls.size)].sum())
    return {"gpus": cluster.num_gpus, "tokens": tokens, "des_wall_s": wall, "des_cpu_s": cpu,
            "chunk_hops": chunk_hops, "cpu_us_per_chunk_hop": 1e6 * cpu / max(1, chunk_hops)}


def _child(kind: str, args: list[int]) -> int:
    out = count_case(*args) if kind == "count" else des_case(*args)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def _run(kind: str, *args: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["gpus"] for r in ok], [r["cpu_us_per_chunk_hop"] for r in ok], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs (fat tree, 8 per server)")
    ax.set_ylabel("DES CPU time per chunk-hop (us)")
    ax.set_ylim(bottom=0)
    ax.set_title("DES cost per chunk-hop by cluster size")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="Skip the 16,384-GPU count and the"
                    " 4,096-GPU replay.")
    ap.add_argument("--no-des", action="store_true", help="Counting only.")
    ap.add_argument("--plot", type=Path, default=None, help="Write the DES cost figure here.")
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child[0], [int(x) for x in args.child[1:]])
    print(f"load: {os.getloadavg()}")
    counts = COUNT_CASES[:2] if args.quick else COUNT_CASES
    print(f"{'GPUs':>6s} {'tokens':>7s} {'routes wall/cpu s':>18s} {'count wall/cpu s':>17s}"
          f" {'peak RSS MB':>11s}")
    for k, servers, tokens in counts:
        r = _run("count", k, servers, tokens)
        if "error" in r:
            print(f"{8 * servers:6d} {tokens:7d} {r['error']}")
            continue
        print(f"{int(r['gpus']):6d} {int(r['tokens']):7d} {r['route_wall_s']:8.2f}/"
              f"{r['route_cpu_s']:<9.2f} {r['count_wall_s']:7.2f}/{r['count_cpu_s']:<9.2f}"
              f" {r['peak_rss_mb']:11.0f}")
    if args.no_des:
        return 0
    rows = []
    print(f"\n{'GPUs':>6s} {'tokens':>7s} {'DES wall/cpu s':>15s} {'chunk-hops':>11s}"
          f" {'us/chunk-hop':>12s} {'peak RSS MB':>11s}")
    for k, servers in DES_CASES[:2] if args.quick else DES_CASES:
        r = _run("des", k, servers)
        rows.append(r)
        if "error" in r:
            print(f"{8 * servers:6d} {r['error']}")
            continue
        print(f"{int(r['gpus']):6d} {int(r['tokens']):7d} {r['des_wall_s']:6.1f}/"
              f"{r['des_cpu_s']:<8.1f} {int(r['chunk_hops']):11d}"
              f" {r['cpu_us_per_chunk_hop']:12.2f} {r['peak_rss_mb']:11.0f}")
    if args.plot is not None:
        _plot(rows, args.plot)
        print(f"wrote {args.plot}")
    print(f"load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
