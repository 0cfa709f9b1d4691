"""Timing constants: every hardware fact the replay's times rest on, each with its source.

The one place for them: cluster defaults (:class:`simulator.cluster.builders.LinkDefaults`),
the dispatch schemes' message granularity (:mod:`simulator.dispatch`), the calibration
against DeepEP (``benchmarks/bench_calibration.py``, docs/background/timing-calibration.md,
whose parameter table a test checks against :data:`CALIBRATION`) and any other timing model
(e.g. a flow-level mode) import them from here.  Nothing here is fitted to a table the
calibration compares with; where a value is a measurement, the measurement is named.

Pure constants (no imports from the simulator), so every module can import this one.
"""

from __future__ import annotations

from dataclasses import dataclass

GBYTE = 1e9
GBIT = 1e9 / 8


@dataclass(frozen=True, slots=True)
class Fact:
    """One timing constant: its value (SI units, as the name says), unit and source."""

    value: float
    unit: str
    source: str


# --- defaults of user clusters (DGX-H100-class servers on a 400 Gb/s fabric) ---------------
H100_NVLINK_BYTES_PER_S = Fact(
    450 * GBYTE, "B/s",
    "NVIDIA H100 SXM data sheet: NVLink 900 GB/s bidirectional = 450 GB/s per direction",
)
NIC_400G_BYTES_PER_S = Fact(
    400 * GBIT, "B/s",
    "NVIDIA ConnectX-7 data sheet: 400 Gb/s (NDR) per port = 50 GB/s per direction",
)
SWITCH_PORT_400G_BYTES_PER_S = Fact(
    400 * GBIT, "B/s", "NVIDIA Quantum-2 (NDR) data sheet: 400 Gb/s per port",
)
NVLINK_HOP_LATENCY_S = Fact(
    0.5e-6, "s",
    "assumed: GPU to NVSwitch and on, sub-microsecond (no data-sheet figure; it is small"
    " against the bandwidth time of every calibrated kernel)",
)
NETWORK_HOP_LATENCY_S = Fact(
    1.0e-6, "s",
    "assumed upper bound per network hop: Quantum-2 switch port to port is ~0.13 us (data"
    " sheet), NIC processing and cable make up the rest of a ~1 us hop",
)
IB_MTU_BYTES = Fact(
    4096, "B", "InfiniBand MTU 4096 B: the unit in which RDMA writes cross the fabric",
)

# --- the testbed of DeepEP's published tables (H800 nodes, CX7 NICs) ---------------------
H800_NVLINK_BYTES_PER_S = Fact(
    160 * GBYTE, "B/s",
    "DeepEP README (docs/legacy.md): H800 '~160 GB/s NVLink maximum bandwidth' (measured)",
)
# DeepEP's low-latency kernels pay a fixed time per kernel, whatever they move: measured
# with 1 token per rank (8 copies of 7.4 KB: < 0.2 us of NVLink time) on one 8-GPU node.
# The H800 of DeepEP's tables is the same GH100 (SM90) chip as the H100 with fewer NVLinks;
# the cost is the kernels' own (launch, count and flag exchange, grid syncs, the per-warp
# latency of the receive-side copies), not bandwidth, so the H100 measurement stands for it.
# What grows with the tokens, the receive copies through HBM, is HBM_COPY_BYTES_PER_S below.
_AIC_LL = (
    "ai-dynamo/aiconfigurator systems/data/h100_sxm/comm/sglang/0.5.12/"
    "wideep_deepep_ll_perf.parquet (DeepEP's test_low_latency, kernel time by kineto, NVLink"
    " allowed): 1 token per rank, hidden 7168, top-8 of 256 experts, EP 8 on one H100 node:"
)
DEEPEP_LL_DISPATCH_KERNEL_S = Fact(
    13.2e-6, "s",
    f"{_AIC_LL} dispatch 13.2 us (2-8 tokens: 13.7-14.8 us; H200: 11.9 us), the kernel's"
    " fixed cost; the replay adds it when a GPU's dispatch data has arrived and been copied",
)
DEEPEP_LL_COMBINE_KERNEL_S = Fact(
    14.4e-6, "s",
    f"{_AIC_LL} combine 14.4 us (2-8 tokens: 14.2-16.5 us; H200: 12.6 us), the kernel's"
    " fixed cost; the replay adds it when a GPU's combine data has arrived and been reduced",
)
# The low-latency kernels also copy every received copy through the GPU's own memory
# (simulator.receive_work): the rate of a device-local copy, read and write counted.
HBM_COPY_BYTES_PER_S = Fact(
    2.5e12, "B/s",
    "measured device-local copy on H100 SXM (HBM3, 3.35 TB/s data sheet; H800 SXM has the"
    " same 80 GB HBM3 at 3.35 TB/s): CUDA sample p2pBandwidthLatencyTest, GPU to itself"
    " (the sample counts the read and the write), 2474.76-2514.71 GB/s over 8 GPUs, mean 2501"
    " GB/s (NVIDIA/nccl issue #1264, HGX H100 SXM): 75 % of the data-sheet rate; the"
    " low-latency kernels' receive copies and combine reduction run at it",
)
_LL_EP8_RDMA_COPIES = 128 * 8 * 7 // 8  # 128 tokens x top-8 per rank; its own 1/8 stays local
_LL_DISPATCH_RATE = _LL_EP8_RDMA_COPIES * 7408 / (163e-6 - DEEPEP_LL_DISPATCH_KERNEL_S.value)
# the combine's reduction runs after the last arrival: it reads the 1024 received copies
# (its own included) and writes 128 output rows, 14336 B each
_LL_EP8_REDUCE_S = (128 * 8 + 128) * 14336 / HBM_COPY_BYTES_PER_S.value
_LL_COMBINE_RATE = _LL_EP8_RDMA_COPIES * 14336 / (
    318e-6 - DEEPEP_LL_COMBINE_KERNEL_S.value - _LL_EP8_REDUCE_S)
CX7_RDMA_BYTES_PER_S = Fact(
    round((_LL_DISPATCH_RATE + _LL_COMBINE_RATE) / 2, -8), "B/s",
    "DeepEP README before commit de8cfca (2025-06-05): pure-RDMA low-latency kernels at EP 8"
    " (one node, NVLink off) took 163 us (dispatch) and 318 us (combine) for 128 tokens x"
    " top-8 per rank; 7/8 of the copies go through the rank's own CX7 (its own copy stays"
    " local: dst_rank != rank in csrc/kernels/internode_ll.cu then): 896 x 7408 B in"
    " 163 - 13.2 us (dispatch: its receive copies overlap the arrivals) and 896 x 14336 B in"
    " 318 - 14.4 - 6.6 us (combine: the kernels' fixed costs below, and the reduction after"
    " the last arrival, 1152 x 14336 B at the HBM copy rate) = 44.3 and 43.3 GB/s; the mean,"
    " 43.8 GB/s (88 % of the 50 GB/s line rate), is the NIC's achieved RDMA-write rate",
)

# --- how DeepEP's kernels issue their copies (message granularity) -----------------------
DEEPEP_SLICE_COPIES = Fact(
    8, "copies",
    "DeepEP normal kernels send RDMA in chunks of num_max_rdma_chunked_send_tokens = 8 tokens"
    " (deep_ep/buffers/legacy.py, dispatch and combine configs for EP 24-160); the"
    " low-latency kernels issue one RDMA write per copy (csrc/kernels/legacy/internode_ll.cu)."
    " The replay cuts a DeepEP scheme's messages into slices of this many copies and issues"
    " each GPU's slices round-robin over its destinations, as the kernels interleave them",
)

MAX_SLICES_PER_MESSAGE = Fact(
    16, "slices",
    "modelling resolution, not hardware: a DeepEP message travels as at most this many"
    " slices (more copies per slice beyond), so the replay's events stay bounded; a link"
    " serves slices first come first served, so the interleaving error is at most one slice"
    " (1/16 of the message) per hop",
)

# every constant, by name (the parameter table of docs/background/timing-calibration.md)
CALIBRATION: dict[str, Fact] = {
    "nvlink_bandwidth_bytes_per_s": H800_NVLINK_BYTES_PER_S,
    "nic_bandwidth_bytes_per_s": CX7_RDMA_BYTES_PER_S,
    "deepep_ll_dispatch_kernel_s": DEEPEP_LL_DISPATCH_KERNEL_S,
    "deepep_ll_combine_kernel_s": DEEPEP_LL_COMBINE_KERNEL_S,
    "hbm_copy_bytes_per_s": HBM_COPY_BYTES_PER_S,
    "nic_line_rate_bytes_per_s": NIC_400G_BYTES_PER_S,
    "nvlink_latency_s": NVLINK_HOP_LATENCY_S,
    "network_latency_s": NETWORK_HOP_LATENCY_S,
    "chunk_bytes": IB_MTU_BYTES,
    "deepep_slice_copies": DEEPEP_SLICE_COPIES,
    "max_slices_per_message": MAX_SLICES_PER_MESSAGE,
}
