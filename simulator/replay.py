"""The replay of ``config.mode``: the DES (:func:`simulator.engine.simulate`) or flow mode
(:func:`simulator.flow_engine.simulate_flow`); both give a :class:`SimResult`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from simulator.cluster.paths import RouteTable
from simulator.config import SimConfig
from simulator.engine import SimResult, simulate
from simulator.flow_engine import simulate_flow
from traces.trace import RoutingTrace

REPLAYS = {"des": simulate, "flow": simulate_flow}


def replay(
    blocks: Iterable[RoutingTrace], routes: RouteTable, expert_gpus: np.ndarray,
    config: SimConfig | None = None, background: Callable[[Any], None] | None = None,
) -> SimResult:
    """Replay the blocks with the engine of ``config.mode`` (default: the DES);
    ``background``: the engine's background traffic (expert-weight migration)."""
    config = config or SimConfig()
    return REPLAYS[config.mode](blocks, routes, expert_gpus, config, background)
