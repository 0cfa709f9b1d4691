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
CX7_RDMA_BYTES_PER_S = Fact(
    46 * GBYTE, "B/s",
    "DeepEP README before commit de8cfca (2025-06-05): pure-RDMA low-latency kernels at EP 8"
    " (one node, every copy through the rank's own CX7) moved 1024 x 7408 B in 163 us and"
    " 1024 x 14336 B in 318 us: 46.5 and 46.2 GB/s per NIC for both message sizes, i.e. the"
    " NIC's achieved RDMA-write rate (93 % of the 50 GB/s line rate), with no fixed cost",
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
    "nic_line_rate_bytes_per_s": NIC_400G_BYTES_PER_S,
    "nvlink_latency_s": NVLINK_HOP_LATENCY_S,
    "network_latency_s": NETWORK_HOP_LATENCY_S,
    "chunk_bytes": IB_MTU_BYTES,
    "deepep_slice_copies": DEEPEP_SLICE_COPIES,
    "max_slices_per_message": MAX_SLICES_PER_MESSAGE,
}
