"""The knobs of a rebalancing run: one definition each (default, unit, range, help) that the
``rebalance`` flags and the study keys of rebalancing sweeps derive from."""

from __future__ import annotations

from dataclasses import dataclass, field

from placement.strategies import MIGRATION_AWARE
from simulator.modes import REPLAY_MODES
from traces.infra.errors import InputError
from traces.infra.options import check_options, option
from traces.origin_models import origins_field

POLICIES = ("static", "periodic", "threshold")
MODES = ("analytic", *REPLAY_MODES)
MIGRATION_MODES = ("stall", "async")


def _choice(default: str, help: str, choices: tuple[str, ...]) -> str:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True, slots=True)
class RebalanceConfig:
    """The knobs of one rebalancing run (each a sweep axis)."""

    strategy: str = field(default="ilp-load", metadata={"help": "Placement strategy."})
    policy: str = _choice("periodic", "static, periodic or threshold.", POLICIES)
    interval_steps: int = option(1000, "Steps between decisions.", "steps", 1)
    window_steps: int = option(1000, "Steps a re-fit looks back.", "steps", 1)
    threshold: float = option(
        0.05, "threshold policy: switch when the layout in force costs this fraction more than"
        " a fresh one.", "", 0, 10, high_open=True)
    move_weight: float | None = option(
        None, "Price on weight bytes moved (byte-hops per byte-hop).", "", 0)
    move_budget_bytes: float | None = option(
        None, "Most weight bytes one rebalance may move.", "bytes", 0)
    sample_tokens: int = option(
        4096, "dedup, dedup-bytes: tokens of the last --window steps a re-fit is fitted on (a"
        " uniform sample; memory: at most this many tokens per gcd(--interval, --window)"
        " steps).", "tokens", 1, 1_048_576)
    weight_bytes_per_param: float = option(
        1.0, "Serving precision of expert weights (1 = FP8, 2 = BF16).", "bytes", 0,
        low_open=True)
    migration: str = _choice(
        "stall", "stall: serving stops while the weights move (DES-measured with --mode des);"
        " async: the weights move in the background, sharing links with serving traffic"
        " (needs a replay mode).",
        MIGRATION_MODES)
    server_dedup: bool = field(default=True, metadata={"help": "De-duplicated dispatch."})
    mode: str = _choice("analytic", "analytic (counts), or a replay for latency: "
                        + " or ".join(REPLAY_MODES) + " (des also measures the stall).", MODES)
    origins: str = origins_field()

    def __post_init__(self) -> None:
        where = "rebalance"
        for name, choices in (("policy", POLICIES), ("mode", MODES),
                              ("migration", MIGRATION_MODES)):
            if getattr(self, name) not in choices:
                raise InputError(f"{where}: {name} {getattr(self, name)!r}: choose one of"
                                 f" {', '.join(choices)}")
        check_options(self, where)
        if self.migration == "async" and self.mode not in REPLAY_MODES:
            raise InputError(
                "--migration async: the moves' overlap with serving is measured in a replay;"
                f" add --mode {' or --mode '.join(REPLAY_MODES)} (or use --migration stall)"
            )
        if (self.move_weight is not None or self.move_budget_bytes is not None) and (
                self.strategy not in MIGRATION_AWARE):
            raise InputError(
                f"--move-weight/--move-budget: strategy {self.strategy} has no migration-aware"
                " re-placement (it re-fits whole, relabelled for the fewest moves); use one of"
                f" {', '.join(sorted(MIGRATION_AWARE))} or drop them")
        if self.policy == "static" and (
            self.move_weight is not None or self.move_budget_bytes is not None
        ):
            raise InputError("--policy static never re-places: --move-weight/--move-budget apply"
                             " to periodic and threshold")
