"""Cross-check of dedup's search on ESFT: a state-of-the-art hypergraph partitioner on the
same per-layer problem (is the in-task target missed for lack of search?).

    pip install mtkahypar   # not a dependency of moe-netsim: this check only
    PYTHONPATH=. python benchmarks/bench_dedup_partitioner.py [--seeds 4] [--preset QUALITY]

On 2 servers with one copy per expert and origins unrelated to the tokens' content (the ESFT
bench pins sequence i to GPU i mod 16), a token costs one remote copy unless all its experts
share a server, and then half a copy on average over its origin: minimising copies is
balanced bisection of the hypergraph "tokens over experts" under the cut-net metric, which
Mt-KaHyPar solves (32 experts a side, no imbalance, the best of ``--seeds`` runs).  Per task:
fit on the even-numbered sequences, replay the odd ones, as ``bench_dedup.py --sections esft``
does; the printed reduction against round-robin is to be read beside that benchmark's dedup
row.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.bench_dedup import ESFT, TASKS, _concat
from placement.baselines import round_robin_gpus
from traces.importers.esft import iter_esft
from traces.origins import resolve_origins

GPUS, GPUS_PER_SERVER = 16, 8


def _bisect(mk, init, experts: np.ndarray, num_experts: int, preset, seeds: int) -> np.ndarray:
    """Server (0/1) per expert: the best cut of ``seeds`` runs, equal halves."""
    sets, weight = np.unique(np.sort(experts, axis=1), axis=0, return_counts=True)
    best: tuple[int, np.ndarray] | None = None
    for seed in range(seeds):
        ctx = init.context_from_preset(preset)
        ctx.set_partitioning_parameters(2, 0.0, mk.Objective.CUT)
        ctx.logging = False
        mk.set_seed(seed)
        hg = init.create_hypergraph(ctx, num_experts, len(sets), sets.tolist(),
                                    [1] * num_experts, weight.tolist())
        part = hg.partition(ctx)
        srv = np.array([part.block_id(e) for e in range(num_experts)])
        if best is None or part.cut() < best[0]:
            best = (part.cut(), srv)
    assert best is not None and np.bincount(best[1]).tolist() == [num_experts // 2] * 2
    return best[1]


def _copies(experts: np.ndarray, own: np.ndarray, srv: np.ndarray) -> float:
    """Remote copies per token of one layer: tokens with an expert off their own server."""
    return float((srv[experts] != own[:, None]).any(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--preset", default="QUALITY")
    args = ap.parse_args()
    import mtkahypar as mk

    init = mk.initialize(1)
    preset = getattr(mk.PresetType, args.preset)
    for task in TASKS:
        tr = _concat(list(iter_esft(ESFT / task)))
        own = resolve_origins(tr, GPUS) // GPUS_PER_SERVER
        fit, rep = tr.seq_id % 2 == 0, tr.seq_id % 2 == 1
        E = tr.model.num_routed_experts
        rr = round_robin_gpus(tr.experts.shape[1], E, GPUS) // GPUS_PER_SERVER
        base, got = [], []
        for li in range(tr.experts.shape[1]):
            x = tr.experts[:, li, :].astype(np.int64)
            srv = _bisect(mk, init, x[fit], E, preset, args.seeds)
            base.append(_copies(x[rep], own[rep], rr[li]))
            got.append(_copies(x[rep], own[rep], srv))
        print(f"partitioner {task:12s} rr {np.mean(base):.3f} mt-kahypar {np.mean(got):.3f}"
              f" ({100 * (1 - np.mean(got) / np.mean(base)):.1f}% fewer than rr)", flush=True)


if __name__ == "__main__":
    main()
