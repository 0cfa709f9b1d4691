"""Simulated DeepEP kernels beside DeepEP's published tables (docs/background/).

DeepEP's README (legacy V1 performance section, deepseek-ai/DeepEP docs/legacy.md) publishes
two tables measured on H800 nodes (8 GPUs, NVLink, one ConnectX-7 400 Gb/s NIC per GPU):

* normal kernels: 4096 tokens per rank, hidden 7168, top-4 groups, top-8 of 256 experts,
  FP8 dispatch, BF16 combine; the *bottleneck bandwidth* at EP 8 (NVLink) and 16/32/64 (RDMA);
* low-latency kernels: 128 tokens per rank, hidden 7168, top-8 of 256 experts, FP8 dispatch,
  BF16 combine; dispatch and combine latency at EP 8..256.

This command replays the same configurations through the discrete-event model (one layer,
one micro-batch, no expert compute) with hardware parameters only (``HARDWARE``, each with its
source) and prints both side by side with the relative difference.  Routing follows DeepEP's
tests: scores |N(0,1)| + 1 per expert, top-8 (normal kernels: within the top-4 nodes by their
best expert), experts dealt to ranks in contiguous blocks, tokens on their own rank.  Bytes
per copy follow the tests' counting: FP8 dispatch hidden x (1 + 4/128) (+16 B of metadata in
the low-latency kernels), BF16 combine hidden x 2.

    PYTHONPATH=. python benchmarks/bench_calibration.py [--seed 0] [--only ll|normal]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from simulator.cluster.builders import LinkDefaults, build_rail_optimized
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.traffic import TrafficConfig
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta


@dataclass(frozen=True)
class Fact:
    value: float
    source: str


HARDWARE = {
    "nvlink_bandwidth_bytes_per_s": Fact(
        160e9, "DeepEP README: H800 '~160 GB/s NVLink maximum bandwidth' (measured)"
    ),
    "nic_bandwidth_bytes_per_s": Fact(
        50e9, "ConnectX-7 data sheet: 400 Gb/s NDR = 50 GB/s; DeepEP README '~50 GB/s maximum'"
    ),
    "nvlink_latency_s": Fact(0.5e-6, "LinkDefaults (NVLink hop latency, sub-microsecond)"),
    "network_latency_s": Fact(1.0e-6, "LinkDefaults (per network hop: NIC/switch + cable)"),
    "chunk_bytes": Fact(4096, "InfiniBand MTU 4096 B: the unit that pipelines across hops"),
}
GPUS_PER_SERVER = 8
HIDDEN = 7168
EXPERTS = 256
TOP_K = 8
FP8_BYTES = HIDDEN * (1 + 4 / 128)  # values + one fp32 scale per 128 (DeepEP's fp8_factor)
LL_DISPATCH_BYTES = FP8_BYTES + 16  # the low-latency kernels' per-token metadata

# DeepEP docs/legacy.md, "Performance"
LL_TABLE = {  # EP: (dispatch us, dispatch GB/s, combine us, combine GB/s)
    8: (77, 98, 114, 127), 16: (118, 63, 195, 74), 32: (155, 48, 273, 53),
    64: (173, 43, 314, 46), 128: (192, 39, 369, 39), 256: (194, 39, 360, 40),
}
NORMAL_TABLE = {  # EP: (kind, dispatch GB/s, combine GB/s)
    8: ("NVLink", 153, 158), 16: ("RDMA", 43, 43), 32: ("RDMA", 58, 57), 64: ("RDMA", 51, 50),
}


def cluster_for(ep: int):
    servers = max(1, ep // GPUS_PER_SERVER)
    d = LinkDefaults(
        gpus_per_server=min(ep, GPUS_PER_SERVER),
        nvlink_bandwidth_bytes_per_s=HARDWARE["nvlink_bandwidth_bytes_per_s"].value,
        nic_bandwidth_bytes_per_s=HARDWARE["nic_bandwidth_bytes_per_s"].value,
        switch_bandwidth_bytes_per_s=HARDWARE["nic_bandwidth_bytes_per_s"].value,
        nvlink_latency_s=HARDWARE["nvlink_latency_s"].value,
        network_latency_s=HARDWARE["network_latency_s"].value,
    )
    # one scalable unit of rails, non-blocking spines (a rail-optimized fat tree)
    return build_rail_optimized(servers, servers, 8, 1.0, d)


def routing(ep: int, tokens_per_rank: int, topk_groups: int, rng: np.random.Generator):
    """DeepEP's test routing: experts [tokens, 1, 8] and origins (rank of each token)."""
    n = ep * tokens_per_rank
    scores = np.abs(rng.standard_normal((n, EXPERTS))) + 1
    nodes = max(1, ep // GPUS_PER_SERVER)
    if topk_groups < nodes:
        best = scores.reshape(n, nodes, -1).max(axis=2)
        keep = np.argsort(-best, axis=1)[:, :topk_groups]
        mask = np.zeros((n, nodes), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        scores = np.where(np.repeat(mask, EXPERTS // nodes, axis=1), scores, 0.0)
    experts = np.argsort(-scores, axis=1)[:, :TOP_K]
    origins = np.repeat(np.arange(ep), tokens_per_rank)
    return experts[:, None, :].astype(np.uint8), origins


def replay(ep: int, tokens_per_rank: int, topk_groups: int, scheme: str, dispatch_bytes: float,
           seed: int, combine_bytes: float = 2.0 * HIDDEN):
    experts, origins = routing(ep, tokens_per_rank, topk_groups, np.random.default_rng(seed))
    model = ModelSpec("deepep-test", (0,), EXPERTS, 0, TOP_K, HIDDEN)
    meta = TraceMeta(model=model, source="benchmark", produced_by="bench_calibration.py")
    n = experts.shape[0]
    trace = RoutingTrace(
        meta=meta, experts=experts, seq_id=np.arange(n), position=np.zeros(n, dtype=np.int32),
        origin_gpu=origins.astype(np.int32), step=np.zeros(n, dtype=np.int32),
    )
    layout = (np.arange(EXPERTS) // (EXPERTS // ep))[None, :]
    traffic = TrafficConfig(dispatch_bytes / HIDDEN, combine_bytes / HIDDEN, dispatch=scheme)
    cfg = SimConfig(
        traffic=traffic, chunk_bytes=int(HARDWARE["chunk_bytes"].value),
        inflight_microbatches=1, expert_time_per_route_s=0.0,
    )
    routes = build_route_table(cluster_for(ep))
    res = simulate([trace], routes, layout, cfg)
    ph = res.phases.set_index("phase")
    return res, experts[:, 0, :], origins, (
        float(ph.loc["dispatch", "duration_s"]), float(ph.loc["combine", "duration_s"])
    )


def kernels(ep: int, tokens_per_rank: int, topk_groups: int, scheme: str,
            dispatch_bytes: float, seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Dispatch and combine each timed alone, as DeepEP times its kernels: the other phase's
    copies carry one byte, so the two do not overlap on the links."""
    _, experts, origins, (d, _) = replay(
        ep, tokens_per_rank, topk_groups, scheme, dispatch_bytes, seed, combine_bytes=1.0
    )
    _, _, _, (_, c) = replay(ep, tokens_per_rank, topk_groups, scheme, 1.0, seed)
    return experts, origins, d, c


def _pct(sim: float, ref: float) -> str:
    return f"{100 * (sim - ref) / ref:+.0f} %"


def low_latency(seed: int) -> list[str]:
    rows = [
        "| EP | dispatch (DeepEP) | dispatch (sim) | diff | combine (DeepEP) | combine (sim)"
        " | diff |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ep, (d_us, _, c_us, _) in LL_TABLE.items():
        _, _, d, c = kernels(ep, 128, TOP_K, "deepep-ll", LL_DISPATCH_BYTES, seed)
        rows.append(
            f"| {ep} | {d_us} us | {d * 1e6:.0f} us | {_pct(d * 1e6, d_us)} | {c_us} us"
            f" | {c * 1e6:.0f} us | {_pct(c * 1e6, c_us)} |"
        )
    return rows


def normal(seed: int) -> list[str]:
    rows = [
        "| EP | kind | dispatch (DeepEP) | dispatch (sim) | diff | combine (DeepEP)"
        " | combine (sim) | diff |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ep, (kind, d_ref, c_ref) in NORMAL_TABLE.items():
        nodes = max(1, ep // GPUS_PER_SERVER)
        experts, _, d, c = kernels(ep, 4096, min(4, nodes), "deepep-normal", FP8_BYTES, seed)
        per_rank = EXPERTS // ep
        if kind == "NVLink":  # tokens each rank receives (one per token and rank)
            ranks = experts // per_rank
            units = sum(len(set(r)) for r in ranks.tolist()) / ep
        else:  # tokens each rank sends over RDMA: one per token and node it reaches
            node = experts // (EXPERTS // nodes)
            units = sum(len(set(r)) for r in node.tolist()) / ep
        d_gbs = units * FP8_BYTES / d / 1e9
        c_gbs = units * HIDDEN * 2 / c / 1e9
        rows.append(
            f"| {ep} | {kind} | {d_ref} GB/s | {d_gbs:.0f} GB/s | {_pct(d_gbs, d_ref)}"
            f" | {c_ref} GB/s | {c_gbs:.0f} GB/s | {_pct(c_gbs, c_ref)} |"
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["ll", "normal"])
    args = p.parse_args()
    t0 = time.perf_counter()
    print("Hardware parameters:\n")
    print("| parameter | value | source |\n|---|---:|---|")
    for name, fact in HARDWARE.items():
        print(f"| `{name}` | {fact.value:g} | {fact.source} |")
    if args.only in (None, "ll"):
        print("\nLow-latency kernels (deepep-ll, 128 tokens per rank):\n")
        print("\n".join(low_latency(args.seed)))
    if args.only in (None, "normal"):
        print("\nNormal kernels (deepep-normal, 4096 tokens per rank), bottleneck bandwidth:\n")
        print("\n".join(normal(args.seed)))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
