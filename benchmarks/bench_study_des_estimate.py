"""Benchmark: a study's DES line, per cell, against the CPU time each cell's replay then takes.

    .venv/bin/python benchmarks/bench_study_des_estimate.py [--grid quick-paper|des-sweep]

Builds the grid (``quick-paper``: the cells of `moe-netsim study paper --quick --no-esft`;
``des-sweep``: a DES sweep of R1 on a 16-server fat tree over micro-batch sizes and dispatch
schemes, round-robin and eplb), counts each cell's DES as the study line does
(experiments/studies/des_estimate.py: first micro-batch, round-robin stand-in, hop events x
``CPU_S_PER_HOP_EVENT``), then evaluates every cell serially in this process and measures the
CPU time of its DES replay (``simulator.replay.replay``, user + system of this process).
One Markdown row per cell: the line's DES seconds now and at the old 2 us per token and layer,
the measured seconds, and whether the line is within 2x; then the totals, the CPU the counting
itself took, the date, the commit and the machine load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWEEP = {
    "seed": 0,
    "study": {"name": "des sweep"},
    "model": {"preset": "deepseek-r1"},
    "topology": {"family": "fat-tree", "params": {"k": 8, "num_servers": 16}},
    "trace": {"source": "synthetic", "fit_tokens": 1024, "replay_tokens": 1024},
    "axes": {"sim.microbatch_tokens": [128, 1024], "sim.dispatch": ["all-to-all",
                                                                    "deepep-normal",
                                                                    "deepep-ll"],
             "strategy.name": ["round-robin", "eplb"]},
}


def _grid(name: str) -> Any:
    from experiments.studies.paper import paper_study
    from experiments.studies.spec import build_study

    return paper_study(quick=True) if name == "quick-paper" else build_study(SWEEP, "bench")


def _measured(config: dict[str, Any]) -> float:
    """CPU seconds of the cell's DES replay, the cell evaluated in full."""
    import experiments.pipeline as pipeline
    from experiments.studies.cell import evaluate_cell

    spent = [0.0]
    real = pipeline.replay

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.process_time()
        try:
            return real(*a, **k)
        finally:
            spent[0] += time.process_time() - t0

    pipeline.replay = timed  # type: ignore[assignment]
    try:
        evaluate_cell(config)
    finally:
        pipeline.replay = real  # type: ignore[assignment]
    return spent[0]


def main() -> None:
    from experiments.studies.des_estimate import with_des_counts
    from traces.infra.limits import CPU_S_PER_HOP_EVENT, CPU_S_PER_TOKEN_LAYER

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=("quick-paper", "des-sweep"), default="quick-paper")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    study = _grid(args.grid)
    t0 = time.process_time()
    works = with_des_counts([c.config for c in study.cells], [c.work for c in study.cells])
    counting_s = time.process_time() - t0
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, load {' '.join(load)},"
          f" grid {args.grid}, {len(study.cells)} cells, {CPU_S_PER_HOP_EVENT * 1e6:g} us per"
          f" hop event; counting took {counting_s:.1f} s CPU\n")
    print("| cell | hop events | line s (old) | measured s | within 2x |")
    print("|---|---|---|---|---|")
    said = old = got = 0.0
    within = 0
    for cell, work in zip(study.cells, works, strict=True):
        line_s = work.des_hop_events * CPU_S_PER_HOP_EVENT  # the line's DES share
        old_s = work.des_token_layers * CPU_S_PER_TOKEN_LAYER["des"]  # the old rate's
        cpu = _measured(cell.config)
        ok = 0.5 <= line_s / cpu <= 2.0 if cpu > 0 else False
        within += ok
        said, old, got = said + line_s, old + old_s, got + cpu
        label = f"{cell.index}: " + "; ".join(
            str(v.get("preset") or v.get("family") or v.get("name") or v)
            if isinstance(v, dict) else str(v) for _, row in cell.axis_values
            for v in (row if isinstance(row, list) else [row]))[:80]
        print(f"| {label} | {work.des_hop_events:.3g} | {line_s:.2f} ({old_s:.2f}) |"
              f" {cpu:.2f} | {'yes' if ok else 'no'} |")
    print(f"\ntotal: line {said:.1f} s (old rate {old:.1f} s), measured {got:.1f} s;"
          f" {within} of {len(study.cells)} cells within 2x")


if __name__ == "__main__":
    main()
