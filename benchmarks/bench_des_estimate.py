"""Benchmark: the DES's CPU-time line against the CPU time the replay then takes.

    python benchmarks/bench_des_estimate.py [--tokens N] [--workdir DIR]

Generates R1 traces (``--tokens``, default 2,048), places them with eplb, and replays each with
every dispatch scheme on DeepSeek's EP32 prefill unit (rail-optimized, per-GPU NICs) and on a
32-server fat tree (pooled NICs), each as a fresh `moe-netsim simulate` process.  For each it
prints the hop events counted before the run (simulator/des_cost.py), the CPU time that count
predicts (``traces.infra.limits.CPU_S_PER_HOP_EVENT``), the CPU time measured (user + system of
the child, start-up included) and the measured CPU per hop event, with the date, the commit and
the machine load that docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from traces.infra.limits import CPU_S_PER_HOP_EVENT  # noqa: E402

CLUSTERS = {"EP32 rail": ["--preset", "deepseek-prefill-ep32"],
            "fat tree 32 servers": ["--fat-tree", "8", "32"]}
SCHEMES = ("all-to-all", "deepep-normal", "deepep-ll")


def _cli(*argv: str) -> str:
    """Run `moe-netsim argv` in a fresh process; its stderr."""
    done = subprocess.run([sys.executable, "-m", "experiments", *argv], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stderr


def _cpu_s(argv: list[str]) -> float:
    """CPU seconds of `moe-netsim argv` run as a child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _cli(*argv)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _events(trace: Path, cluster: list[str], layout: Path, scheme: str) -> tuple[float, float]:
    """(hop events the line counts: first micro-batch scaled to the trace, hop events of every
    micro-batch), as simulate reads them (default origins and micro-batches)."""
    from experiments.cli import build_parser
    from experiments.commands.cluster_args import cluster_from_args
    from experiments.commands.simulate import load_inputs
    from simulator.des_cost import microbatch_work
    from simulator.microbatches import microbatches
    from simulator.traffic_config import TrafficConfig
    from traces.io import iter_trace
    from traces.origins import OriginAssigner, with_origins

    args = build_parser().parse_args(["simulate", "--trace", str(trace), *cluster, "--layout",
                                      str(layout), "--out", "unused"])
    spec = cluster_from_args(args)
    assert spec is not None
    _, routes, expert_gpus = load_inputs(trace, spec, "bench", layout)
    traffic = TrafficConfig(dispatch=scheme)
    assigner = OriginAssigner(None, routes.cluster.gpu_server)
    blocks = list(microbatches(with_origins(iter_trace(trace), assigner)))
    works = [microbatch_work(b, routes, expert_gpus, traffic).hop_events for b in blocks]
    tokens = sum(b.num_tokens for b in blocks)
    return works[0] * tokens / blocks[0].num_tokens, float(sum(works))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-des-estimate-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, load {' '.join(load)},"
          f" {args.tokens:,} R1 tokens, {CPU_S_PER_HOP_EVENT * 1e6:g} us per hop event\n")
    print("| cluster | dispatch | hop events (line / run) | said CPU s | measured CPU s |"
          " us per event |")
    print("|---|---|---|---|---|---|")
    for name, cluster in CLUSTERS.items():
        trace, layout = work / f"{name[:4]}.parquet", work / f"{name[:4]}-layout.parquet"
        gpus = "32" if "EP32" in name else "256"
        _cli("trace", "synth", "--model", "deepseek-r1", "--tokens", str(args.tokens),
             "--gpus", gpus, "--out", str(trace), "--overwrite", "-q")
        _cli("place", "--fit", str(trace), *cluster, "--strategy", "eplb", "--out",
             str(layout), "--overwrite", "-q")
        for scheme in SCHEMES:
            said, events = _events(trace, cluster, layout, scheme)
            cpu = _cpu_s(["simulate", "--trace", str(trace), *cluster, "--layout", str(layout),
                          "--dispatch", scheme, "--out", str(work / f"run-{scheme}"),
                          "--overwrite", "--no-report", "-q"])
            print(f"| {name} | {scheme} | {said:.2g} / {events:.2g} |"
                  f" {said * CPU_S_PER_HOP_EVENT:.1f} | {cpu:.1f} | {cpu / events * 1e6:.1f} |")


if __name__ == "__main__":
    main()
