"""Run knobs of the discrete-event replay, apart from the engine so that reading them (the
command line's ``--help``) does not import SimPy or pandas."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simulator.traffic import TrafficConfig
from traces.infra.errors import InputError


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Run knobs of the replay."""

    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    chunk_bytes: int = field(
        default=1 << 20, metadata={"help": "Messages are cut into chunks of this size."}
    )
    inflight_microbatches: int = field(
        default=2, metadata={"help": "Micro-batches in flight at once (overlap)."}
    )
    microbatch_tokens: int | None = field(
        default=None,
        metadata={"help": "Re-cut the stream into micro-batches of N tokens; default: blocks."},
    )
    gpu_flops_per_s: float = field(
        default=400e12, metadata={"help": "Effective expert GEMM rate of one GPU."}
    )
    expert_time_per_route_s: float | None = field(
        default=None,
        metadata={"help": "Compute time per routed token per expert; default from FLOPs."},
    )
    utilisation_window_s: float | None = field(
        default=None,
        metadata={"help": "Window of the utilisation-over-time frame; default makespan/100."},
    )

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1:
            raise InputError("simulate: chunk_bytes must be >= 1")
        if self.inflight_microbatches < 1:
            raise InputError("simulate: inflight_microbatches must be >= 1")
        if self.microbatch_tokens is not None and self.microbatch_tokens < 1:
            raise InputError("simulate: microbatch_tokens must be >= 1")
        if not (np.isfinite(self.gpu_flops_per_s) and self.gpu_flops_per_s > 0):
            raise InputError("simulate: gpu_flops_per_s must be > 0")
        t = self.expert_time_per_route_s
        if t is not None and not (np.isfinite(t) and t >= 0):
            raise InputError("simulate: expert_time_per_route_s must be >= 0")
        w = self.utilisation_window_s
        if w is not None and not (np.isfinite(w) and w > 0):
            raise InputError("simulate: utilisation_window_s must be > 0")

    def route_compute_s(self, hidden: int, intermediate: int) -> float:
        """Expert time per route: given, or 3 GEMMs (gate, up, down) = 6*hidden*inter FLOPs."""
        if self.expert_time_per_route_s is not None:
            return self.expert_time_per_route_s
        inter = intermediate or hidden
        return 6.0 * hidden * inter / self.gpu_flops_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
