"""The time limit of one ``dedup`` solve, on a clock tests can replace.

Every phase (start states, searches, replicas, the lower bound, the ablation) asks the same
``Deadline`` whether time is left, so the whole solve stays within ``--time-limit``; a test
injects a clock that counts its readings instead of measuring wall time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Share of the time limit the layers' searches may use; the rest is kept for what must follow
# them (the layout's exact cost on the sample, and the bound and ablation when time is left).
SEARCH_SHARE = 0.8


@dataclass(frozen=True)
class Deadline:
    """Starts at ``start_s`` and ends at ``end_s`` on ``clock`` (seconds); ``search_end_s``
    ends the searches earlier."""

    start_s: float
    end_s: float
    search_end_s: float
    clock: Callable[[], float] = field(default=time.perf_counter, compare=False)

    @classmethod
    def after(cls, limit_s: float, clock: Callable[[], float] = time.perf_counter) -> Deadline:
        now = clock()
        return cls(now, now + limit_s, now + SEARCH_SHARE * limit_s, clock)

    def passed(self) -> bool:
        """The whole solve's time is up."""
        return self.clock() >= self.end_s

    def search_passed(self) -> bool:
        """The searches' share of the time is up."""
        return self.clock() >= self.search_end_s

    def share(self, parts: int) -> Deadline:
        """This part's deadline when the searches' time left is split evenly over ``parts``
        (this one and those after it): a part that ends early leaves its time to the next."""
        now = self.clock()
        left = max(0.0, self.search_end_s - now)
        return dataclasses.replace(self, search_end_s=now + left / max(1, parts))

    def left_s(self) -> float:
        return max(0.0, self.end_s - self.clock())
