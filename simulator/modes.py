"""The simulation modes: one registry for ``simulate --mode``, ``rebalance --mode`` and the
study key ``sim.mode`` (light: no numerical libraries, so command lines start fast).

``des`` and ``flow`` are *replays*: they time the trace and produce the same frames
(:class:`simulator.summaries.SimFrames`); ``analytic`` counts bytes without timing.
"""

from __future__ import annotations

from traces.infra.errors import InputError

SIM_MODES: dict[str, str] = {
    "des": "discrete-event replay (SimPy): messages as chunk trains through FIFO links",
    "flow": "flow-level replay: messages as flows sharing links at max-min fair rates,"
    " no per-message events",
    "analytic": "vectorised count of bytes per link and bandwidth lower bounds, no timing",
}
REPLAY_MODES = ("des", "flow")
DEFAULT_MODE = "des"
DEFAULT_FLOW_TOLERANCE = 0.01
# options only some replay modes take: option field -> the modes that take it
MODE_ONLY_OPTIONS: dict[str, tuple[str, ...]] = {"flow_tolerance": ("flow",)}


def check_mode(mode: str, where: str, modes: tuple[str, ...] = REPLAY_MODES) -> None:
    if mode not in modes:
        raise InputError(f"{where}: unknown mode {mode!r}; choose one of {', '.join(modes)}")


def mode_option_problem(mode: str, option: str, name: str) -> str | None:
    """Why option ``option`` (spelled ``name`` for the user) cannot be given in ``mode``."""
    takes = MODE_ONLY_OPTIONS.get(option)
    if takes is None or mode in takes:
        return None
    return f"{name} applies to mode {' or '.join(takes)} only, not {mode!r}"
