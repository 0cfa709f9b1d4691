"""Options that contradict each other, or that change nothing without another: one table.

Where one of two options would silently win (``--expert-time-per-route-s`` over
``--gpu-flops-per-s``; any time knob under ``--mode analytic``, which has no time), the command
refuses the pair before any work, in one line naming both flags.  A rule fires only for
options the user typed (defaults never contradict), found by :func:`given_dests`.
Value-dependent rules that need the inputs' contents (a strategy's supported options, a
model's experts) stay with the code that knows them (``placement.strategies.check_supported``,
``SynthConfig``); this table holds the ones the flags alone decide.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.modes import MODE_ONLY_OPTIONS, SIM_MODES
from traces.infra.errors import InputError


@dataclass(frozen=True)
class Conflict:
    """``flag`` given together with ``other`` (given; or holding one of ``values``, given or
    by default) is refused; ``needs=True``: ``flag`` given without ``other`` is refused."""

    command: str  # "simulate", "trace synth"
    flag: str
    other: str
    why: str
    values: tuple[str, ...] | None = None
    needs: bool = False

    def message(self) -> str:
        if self.needs:
            return (f"{self.flag} applies only with {self.other} ({self.why}); add it or drop"
                    f" {self.flag}")
        other = self.other if self.values is None else f"{self.other} {'/'.join(self.values)}"
        return f"{self.flag} and {other} contradict: {self.why}; give one"


def _mode_only(command: str) -> tuple[Conflict, ...]:
    """The replay modes' own table (``simulator.modes.MODE_ONLY_OPTIONS``, which study keys are
    checked against too) as rules on ``command``'s ``--mode``: the option given in another
    mode (or the default one) is refused."""
    return tuple(
        Conflict(command, "--" + option.replace("_", "-"), "--mode",
                 f"only mode {' or '.join(takes)} takes it",
                 values=tuple(m for m in SIM_MODES if m not in takes))
        for option, takes in MODE_ONLY_OPTIONS.items())


_DES_ONLY = ("--inflight", "--chunk-bytes", "--gpu-flops-per-s", "--expert-time-per-route-s",
             "--window-s")
_POPULARITY = ("--zipf", "--curve", "--curve-sd", "--max-activation")

CONFLICTS: tuple[Conflict, ...] = (
    Conflict("simulate", "--expert-time-per-route-s", "--gpu-flops-per-s",
             "a given time per route replaces the one derived from the GPU's FLOP rate"),
    *(Conflict("simulate", flag, "--mode", "the analytic count has no time, so it would change"
               " nothing", values=("analytic",)) for flag in _DES_ONLY),
    *_mode_only("simulate"),
    *(Conflict("trace synth", flag, source, "the popularity then comes from the file's counts")
      for source in ("--load-stats", "--fit") for flag in _POPULARITY),
    *(Conflict("trace synth", flag, "--fit", "the routing modes then come from the fitted"
               " trace") for flag in ("--modes", "--mode-sigma")),
    Conflict("trace synth", "--curve-sd", "--zipf",
             "the spread belongs to the esft curve, and --zipf draws a Zipf curve"),
    Conflict("trace synth", "--curve-sd", "--curve",
             "the spread belongs to the esft curve", values=("zipf",)),
    Conflict("trace synth", "--mode-sigma", "--modes",
             "one mode has no contrast", values=("1",)),
    Conflict("trace synth", "--drift-ramp", "--phase-change",
             "the ramp blends phase changes in; give --phase-change or --drift-every",
             needs=True),
    Conflict("trace record", "--seed", "--config",
             "the seed draws random weights; --model-dir loads trained ones", needs=True),
    Conflict("topology draw", "--strategy", "--link-load", "it picks rows of the link-load"
             " table", needs=True),
    Conflict("topology draw", "--metric", "--link-load", "it names a column of the link-load"
             " table", needs=True),
    Conflict("rebalance", "--threshold", "--policy", "only the threshold policy compares"
             " costs", values=("static", "periodic")),
    Conflict("rebalance", "--interval", "--policy", "the static policy never decides",
             values=("static",)),
    *(Conflict(cmd, "--serial", other, "--serial runs every cell in this process")
      for cmd in ("study paper", "sweep") for other in ("--scheduler", "--workers")),
    *(Conflict(cmd, "--workers", "--scheduler", "the scheduler's own workers run the cells")
      for cmd in ("study paper", "sweep")),
)


def _without_drift_every(rule: Conflict, given: set[str]) -> bool:
    """--drift-ramp also applies with --drift-every (the one rule with two partners)."""
    return not (rule.flag == "--drift-ramp" and "--drift-every" in given)


def given_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options typed in ``argv`` (the leaf command's own arguments):
    the same parser again with every default suppressed, so only typed options remain."""
    saved = [(a, a.default) for a in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        parser._defaults.clear()
        ns, _ = parser.parse_known_args(list(argv))
    finally:
        for a, default in saved:
            a.default = default
        parser._defaults.update(saved_defaults)
    return set(vars(ns))


def check_conflicts(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    argv: Sequence[str]) -> None:
    """Refuse the first rule of :data:`CONFLICTS` that the options typed in ``argv`` (the
    whole command line, parsed by ``parser`` into ``args``) break."""
    path: list[str] = []
    while True:  # the command's name and its own parser
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        path.append(getattr(args, subs[0].dest))
        parser = subs[0].choices[path[-1]]
    rules = [r for r in CONFLICTS if r.command == " ".join(path)]
    if not rules:
        return
    argv = list(argv)[len(path):]  # no options come before the command's name
    dest = {s: a.dest for a in parser._actions for s in a.option_strings}
    typed = given_dests(parser, argv)
    given = {s for s, d in dest.items() if d in typed}
    for rule in rules:
        if rule.flag not in given:
            continue
        if rule.needs:
            broken = rule.other not in given and _without_drift_every(rule, given)
        elif rule.values is None:
            broken = rule.other in given
        else:
            broken = str(getattr(args, dest[rule.other])) in rule.values
        if broken:
            raise InputError(rule.message())
