"""The options of ``study failures``, apart from the study so that the command line reads
their defaults without importing pandas or the solvers."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.cluster.failures import ELEMENT_KINDS
from traces.infra.errors import InputError
from traces.infra.options import check_options, option


@dataclass(frozen=True)
class FailureStudyConfig:
    """What the failure study fails, replays and calls robust."""

    failure_class: str = field(default="link", metadata={
        "help": "Which single failures: every network link, every switch or every server.",
        "choices": ELEMENT_KINDS})
    des_worst: int = option(
        1, "Failures per strategy and policy replayed in the DES for latency: those with the"
        " highest analytic bound (0: none).", "", 0, 1000)
    robust_tolerance: float = option(
        0.1, "A layout is robust when its worst failure's bandwidth bound is at most this"
        " fraction above its healthy one.", "", 0, 1e6)

    def __post_init__(self) -> None:
        check_options(self, "study failures")
        if self.failure_class not in ELEMENT_KINDS:
            raise InputError(f"study failures: failure class {self.failure_class!r}: choose one"
                             f" of {', '.join(ELEMENT_KINDS)}")
