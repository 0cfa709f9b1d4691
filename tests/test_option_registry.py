"""CLI flags, study keys and dataclass defaults agree: one definition per option (issue 16).

Every numeric option of SimConfig, TrafficConfig and SolverOptions is declared once, on its
dataclass field (default, unit, range, help; ``traces.infra.options.option``).  The flags of
``simulate`` and ``place`` are derived from those fields, study files take the field names as
keys, and the checks are the same everywhere.  These tests fail on drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

from experiments.cli import build_parser
from experiments.failures_config import FailureStudyConfig
from experiments.studies.sections import solver_options, split_sim_options
from placement import SolverOptions
from simulator.config import SimConfig
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError
from traces.infra.options import Range, range_problem

CONFIGS = (SimConfig, TrafficConfig, SolverOptions, FailureStudyConfig)
OWNERS = {SimConfig: "simulate", TrafficConfig: "simulate", SolverOptions: "place",
          FailureStudyConfig: "study failures"}


def _leaves(parser: argparse.ArgumentParser, prog: str = "") -> dict[str, argparse.ArgumentParser]:
    out = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prog.strip(): parser}
    for name, child in subs[0].choices.items():
        out.update(_leaves(child, f"{prog} {name}"))
    return out


LEAVES = _leaves(build_parser())


def _option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "range" in f.metadata or f.type == "bool"]


def _derived(command: str) -> dict[tuple[type, str], argparse.Action]:
    return {a.option_field: a for a in LEAVES[command]._actions if hasattr(a, "option_field")}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_option_field_has_a_derived_flag_with_its_default(cls: type) -> None:
    derived = _derived(OWNERS[cls])
    for f in _option_fields(cls):
        action = derived.get((cls, f.name))
        assert action is not None, f"{OWNERS[cls]} has no flag derived from {cls.__name__}.{f.name}"
        expected = False if f.type == "bool" else f.default
        assert action.default == expected, (action.option_strings, action.default, expected)


def test_every_flag_of_a_config_field_is_derived() -> None:
    """A hand-written flag with a field's name would be a second definition of its default."""
    names = {f.name.replace("_", "-") for cls in CONFIGS for f in dataclasses.fields(cls)}
    for command, parser in LEAVES.items():
        for action in parser._actions:
            flags = {s.lstrip("-") for s in action.option_strings}
            if flags & names and command in ("simulate", "place"):
                assert hasattr(action, "option_field"), (command, action.option_strings)


@pytest.mark.parametrize("cls", (SimConfig, TrafficConfig), ids=lambda c: c.__name__)
def test_study_sim_keys_are_the_fields_with_the_same_defaults_and_ranges(cls: type) -> None:
    base = SimConfig()
    for f in _option_fields(cls):
        owner = base.traffic if cls is TrafficConfig else base
        assert getattr(owner, f.name) == (f.default if f.type != "bool" else False)
        rng: Range | None = f.metadata.get("range")
        if rng is None or rng.low is None:
            continue
        below = rng.low - (0 if rng.low_open else (1 if f.type.startswith("int") else 1e-9))
        with pytest.raises(InputError, match=f.name):
            split_sim_options({f.name: int(below) if f.type.startswith("int") else below})


def test_study_solver_keys_share_the_ranges() -> None:
    with pytest.raises(InputError, match="mip_rel_gap"):
        solver_options({"options": {"mip_rel_gap": 1.5}}, seed=0)
    assert solver_options({}, seed=3) == SolverOptions(seed=3)


@pytest.mark.parametrize(("command", "action"), [
    pytest.param(c, a, id=f"{c} {a.option_strings[0]}")
    for c in ("simulate", "place") for a in _derived(c).values() if a.type is not None
])
def test_flags_refuse_values_outside_their_range_naming_the_flag(command, action) -> None:
    cls, name = action.option_field
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    rng: Range = f.metadata["range"]
    for bad in ("nan", "-1e30", "1e300", "abc"):
        try:
            value = float(bad)
        except ValueError:
            value = None
        if value is not None and not math.isnan(value) and rng.contains(value):
            continue
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(bad)
    if rng.low is not None:
        assert range_problem(rng.low, rng) is None or rng.low_open


def test_every_origins_flag_and_the_study_key_derive_from_the_one_field() -> None:
    """``--origins`` on every command that takes it, and ``trace.origins``: one definition."""
    from experiments.study_trace import TRACE_DEFAULTS
    from traces.origin_models import OriginOptions

    field = dataclasses.fields(OriginOptions)[0]
    takers = {c: a for c, p in LEAVES.items() for a in p._actions
              if "--origins" in a.option_strings}
    assert {"place", "simulate", "rebalance", "trace synth", "trace import"} <= set(takers)
    assert any(c.startswith("study") for c in takers)
    for command, action in takers.items():
        cls, name = getattr(action, "option_field", (None, None))
        f = next(f for f in dataclasses.fields(cls) if f.name == name)  # OriginOptions, or
        assert f.metadata == field.metadata, command  # RebalanceConfig: both origins_field()
        assert action.default == field.default == TRACE_DEFAULTS["origins"], command
        assert action.metavar == "MODEL[:ARGS]", command
    with pytest.raises(InputError, match="unknown origin model 'nowhere'"):
        OriginOptions("nowhere")
