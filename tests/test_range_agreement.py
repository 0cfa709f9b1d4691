"""Every ranged flag and the study key of the same knob share one range (its dataclass field):
the flag's ``--help`` range is the field's, and a value just outside it is refused as a study
key or a sweep axis value too, naming the key (``experiments/study_trace.py``,
``experiments/rebalance_config.py``).  Every numeric topology builder parameter has one range
(``simulator/cluster/families.py``), refused alike from ``topology --param`` and a study's
``topology.params``."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest
from test_option_registry import LEAVES

from experiments.rebalance_config import RebalanceConfig
from experiments.studies.rebalance_cell import rebalance_config
from experiments.studies.spec import load_study_file
from experiments.study_trace import NUMERIC_KEYS, TRACE_DEFAULTS, TraceSection, check_trace_numbers
from traces.infra.errors import InputError
from traces.infra.options import Range

# (command, flag) -> the field it sets; the study key is the field's name in its table
TRACE_FLAGS = {
    ("study paper", "--tokens"): "replay_tokens",
    ("study failures", "--tokens"): "replay_tokens",
    ("trace synth", "--seq-len"): "seq_len",
    ("trace synth", "--zipf"): "zipf_exponent",
}
STUDY_ONLY = {"fit_tokens", "tenants"}  # no flag sets these: trace.fit_tokens, trace.tenants


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _action(command: str, flag: str) -> argparse.Action:
    return next(a for a in LEAVES[command]._actions if flag in a.option_strings)


def _outside(rng: Range, integer: bool) -> list[float]:
    step = 1 if integer else 1e-9 * max(1.0, abs(rng.high or 1))
    out = []
    if rng.low is not None:
        out.append(rng.low if rng.low_open else rng.low - step)
    if rng.high is not None:
        out.append(rng.high if rng.high_open else rng.high + (1 if integer else rng.high))
    return out


def _rebalance_flags() -> dict[str, argparse.Action]:
    return {a.option_field[1]: a for a in LEAVES["rebalance"]._actions
            if getattr(a, "option_field", (None,))[0] is RebalanceConfig
            and "range" in _field(RebalanceConfig, a.option_field[1]).metadata}


def test_every_numeric_trace_key_has_its_flag_or_is_study_only() -> None:
    assert set(NUMERIC_KEYS) == set(TRACE_FLAGS.values()) | STUDY_ONLY
    assert set(_rebalance_flags()) == {f.name for f in dataclasses.fields(RebalanceConfig)
                                       if "range" in f.metadata}


@pytest.mark.parametrize(("command", "flag", "cls", "key"), [
    *((c, f, TraceSection, k) for (c, f), k in TRACE_FLAGS.items()),
    *(("rebalance", a.option_strings[0], RebalanceConfig, k)
      for k, a in _rebalance_flags().items()),
], ids=lambda x: x if isinstance(x, str) else "")
def test_the_flag_and_the_study_key_share_the_fields_range(command, flag, cls, key) -> None:
    action = _action(command, flag)
    assert getattr(action, "option_field", None) == (cls, key), (command, flag)
    kind, rng = action.option_range
    f = _field(cls, key)
    assert rng == f.metadata["range"] and rng.low is not None, (command, flag)
    for bad in _outside(rng, kind is int):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            action.type(str(int(bad) if kind is int else bad))
        value = int(bad) if kind is int else bad
        if cls is TraceSection:  # a sweep runs the same check on every cell (test below)
            with pytest.raises(InputError, match=f"study: trace.{key}: must be"):
                check_trace_numbers({**TRACE_DEFAULTS, key: value}, "study")
        else:
            config = {"strategy": {"name": "ilp-load"}, "rebalance": {key: value}}
            with pytest.raises(InputError, match=f"^study: .*{key} must be"):
                rebalance_config(config)


@pytest.mark.parametrize(("key", "value"), [("seq_len", 0), ("zipf_exponent", 101.0),
                                            ("replay_tokens", 2**30 + 1), ("tenants", -1)])
def test_a_sweep_axis_value_outside_the_range_is_refused_naming_the_key(
        key: str, value: float, tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[topology]\nfamily = "fat-tree"\nparams = { k = 4, num_servers = 2 }\n'
                 f'[axes]\n"trace.{key}" = [{TRACE_DEFAULTS[key]!r}, {value!r}]\n')
    with pytest.raises(InputError, match=f"trace.{key}: must be"):
        load_study_file(f)


def _builder_params() -> list[tuple[str, object]]:
    from simulator.cluster.families import BUILDERS

    return [(name, p) for name, fam in BUILDERS.items() for p in fam.params]


def test_every_numeric_builder_parameter_has_a_range() -> None:
    missing = [f"{f}.{p.name}" for f, p in _builder_params()
               if (p.type is not str) != (p.range is not None and p.range.low is not None)]
    assert missing == []


@pytest.mark.parametrize(("family", "param"),
                         [(f, p) for f, p in _builder_params() if p.range is not None],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_topology_param_and_the_study_key_refuse_values_outside_its_range(family, param,
                                                                          tmp_path) -> None:
    from simulator.cluster.families import BUILDERS

    integer = param.type is int
    bad = [*(int(v) if integer else v for v in _outside(param.range, integer)),
           *(() if integer else (float("nan"), float("inf")))]
    message = f"{family}: parameter {param.name} must be {param.range.text()}, got"
    for value in bad:  # as `topology build --param NAME=VALUE` gives it: text
        with pytest.raises(InputError, match=f"^{re.escape(message)}"):
            BUILDERS[family](**{param.name: str(value)})
    f = tmp_path / "s.toml"  # the study key, with the first of them
    f.write_text(f'[topology]\nfamily = "{family}"\nparams = {{ {param.name} = {bad[0]!r} }}\n')
    with pytest.raises(InputError, match=re.escape(f"topology.params: {message}")):
        load_study_file(f)
