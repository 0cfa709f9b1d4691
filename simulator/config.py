"""Run knobs of the replays (DES and flow mode), apart from the engine so that reading them (the
command line's ``--help``) does not import SimPy or pandas."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.modes import (
    DEFAULT_FLOW_TOLERANCE,
    DEFAULT_MODE,
    MODE_ONLY_OPTIONS,
    REPLAY_MODES,
    SIM_MODES,
    check_mode,
    mode_option_problem,
)
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError
from traces.infra.options import check_options, option


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Run knobs of the replay."""

    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    chunk_bytes: int = option(1 << 20, "Messages are cut into chunks of this size.", "bytes",
                              1, 2**40)
    inflight_microbatches: int = option(2, "Micro-batches in flight at once (overlap).",
                                        "micro-batches", 1, 1_000_000)
    microbatch_tokens: int | None = option(
        None, "Re-cut the stream into micro-batches of N tokens; default: blocks.", "tokens",
        1, 2**40)
    gpu_flops_per_s: float = option(400e12, "Effective expert GEMM rate of one GPU.", "FLOP/s",
                                    0, 1e21, low_open=True)
    expert_time_per_route_s: float | None = option(
        None, "Compute time per routed token per expert; default from FLOPs.", "s", 0, 1e6)
    utilisation_window_s: float | None = option(
        None, "Window of the utilisation-over-time frame; default makespan/100.", "s",
        0, 1e9, low_open=True)
    mode: str = field(
        default=DEFAULT_MODE,
        metadata={"help": "Replay: " + "; ".join(f"{k}: {SIM_MODES[k]}" for k in REPLAY_MODES),
                  "choices": REPLAY_MODES},
    )
    flow_tolerance: float | None = option(
        None, "Flow mode: merge events within this fraction of the time scale, and"
        f" bottleneck levels within it (0: exact); default {DEFAULT_FLOW_TOLERANCE}.",
        "", 0, 0.5)

    def __post_init__(self) -> None:
        check_options(self, "simulate")
        check_mode(self.mode, "simulate")
        for name in MODE_ONLY_OPTIONS:
            problem = mode_option_problem(self.mode, name, name)
            if getattr(self, name) is not None and problem:
                raise InputError(f"simulate: {problem}")

    def route_compute_s(self, hidden: int, intermediate: int) -> float:
        """Expert time per route: given, or 3 GEMMs (gate, up, down) = 6*hidden*inter FLOPs."""
        if self.expert_time_per_route_s is not None:
            return self.expert_time_per_route_s
        inter = intermediate or hidden
        return 6.0 * hidden * inter / self.gpu_flops_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
