"""The knobs of a rebalancing run (light: no numerical libraries, so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.modes import REPLAY_MODES
from traces.infra.errors import InputError

POLICIES = ("static", "periodic", "threshold")
MODES = ("analytic", *REPLAY_MODES)
MIGRATION_MODES = ("stall", "async")


@dataclass(frozen=True, slots=True)
class RebalanceConfig:
    """The knobs of one rebalancing run (each a sweep axis)."""

    strategy: str = field(default="ilp-load", metadata={"help": "Placement strategy."})
    policy: str = field(default="periodic", metadata={"help": "static, periodic or threshold."})
    interval_steps: int = field(default=1000, metadata={"help": "Steps between decisions."})
    window_steps: int = field(default=1000, metadata={"help": "Steps a re-fit looks back."})
    threshold: float = field(default=0.05, metadata={"help": "threshold: relative excess."})
    move_weight: float | None = field(
        default=None, metadata={"help": "Price on bytes moved (byte-hops per byte-hop)."}
    )
    move_budget_bytes: float | None = field(
        default=None, metadata={"help": "Most weight bytes one rebalance may move."}
    )
    weight_bytes_per_param: float = field(
        default=1.0, metadata={"help": "Serving precision of expert weights (1 = FP8)."}
    )
    migration: str = field(default="stall", metadata={"help": "stall (measured) or async."})
    server_dedup: bool = field(default=True, metadata={"help": "De-duplicated dispatch."})
    mode: str = field(default="analytic", metadata={
        "help": "analytic, or a replay for latency: " + " or ".join(REPLAY_MODES) + "."})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"--policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.interval_steps < 1:
            raise InputError(f"--interval {self.interval_steps}: must be at least 1 step")
        if self.window_steps < 1:
            raise InputError(f"--window {self.window_steps}: must be at least 1 step")
        if not 0 <= self.threshold < 10:
            raise InputError(f"--threshold {self.threshold}: must be in [0, 10)")
        if self.move_weight is not None and not self.move_weight >= 0:
            raise InputError(f"--move-weight {self.move_weight}: must be >= 0")
        if self.move_budget_bytes is not None and not self.move_budget_bytes >= 0:
            raise InputError(f"--move-budget {self.move_budget_bytes}: must be >= 0 bytes")
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.migration not in MIGRATION_MODES:
            raise InputError(f"--migration {self.migration!r}: choose stall or async")
        if self.migration == "async":
            raise InputError(
                "--migration async: weights sharing links with the all-to-all in the DES is not"
                " built yet; use --migration stall"
            )
        if self.policy == "static" and (
            self.move_weight is not None or self.move_budget_bytes is not None
        ):
            raise InputError("--policy static never re-places: --move-weight/--move-budget apply"
                             " to periodic and threshold")


