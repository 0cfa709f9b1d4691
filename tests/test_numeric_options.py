"""Every numeric flag of every command at 0, negative, NaN, infinite, huge and just outside its
range: exit 2 with one line naming the flag, no traceback, nothing written, no input touched
(values inside the range are the other tests' business); every numeric topology builder
parameter likewise as ``topology build --param``.  Every numeric flag has a range
(add_option from a dataclass field, or add_number): none is a bare int or float.  In-process,
so it stays cheap."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from badinput import prepare_cli_dir
from test_input_protection import _run, _snapshot
from test_option_registry import LEAVES

from experiments.options import SEED_RANGE
from placement.options import SolverOptions
from traces.infra.options import Range, field_range

BASE = {
    "simulate": ["simulate", "--mode", "analytic", "--trace", "{d}/trace.parquet", "--topology",
                 "{d}/cluster.json", "--layout", "{d}/layout.csv", "--out", "{d}/run"],
    "place": ["place", "--topology", "{d}/cluster.json", "--fit", "{d}/trace.parquet",
              "--out", "{d}/l.parquet"],
    "demo": ["demo", "--out", "{d}/demo"],
    "trace import": ["trace", "import", "--format", "vllm", "{d}/req.npy", "--model",
                     "{d}/tiny.json", "--out", "{d}/t.parquet"],
    "trace stats": ["trace", "stats", "{d}/trace.parquet", "--out", "{d}/st"],
    "trace synth": ["trace", "synth", "--model", "deepseek-moe-16b", "--tokens", "8",
                    "--out", "{d}/s.parquet"],
    "trace record": ["trace", "record", "--config", "{d}/tiny.json", "--text", "{d}/afile",
                     "--out", "{d}/r.parquet"],
    "rebalance": ["rebalance", "--trace", "{d}/trace.parquet", "--topology", "{d}/cluster.json",
                  "--out", "{d}/rb"],
    "study paper": ["study", "paper", "--quick", "--trace", "{d}/trace.parquet", "--out",
                    "{d}/st"],
    "study failures": ["study", "failures", "--topology", "{d}/cluster.json", "--trace",
                       "{d}/trace.parquet", "--out", "{d}/sf"],
    "sweep": ["sweep", "{d}/study.toml", "--out", "{d}/sw"],
    "topology info": ["topology", "info"],  # the cluster comes from the --fat-tree under test
    "topology draw": ["topology", "draw", "--out", "{d}/d.png"],
    "topology whatif": ["topology", "whatif", "--fail", "server:s0", "--out", "{d}/w.json"],
}


def _candidates(rng: Range, integer: bool) -> list[str]:
    values = [0.0, -1.0, math.nan, math.inf, -math.inf, 1e300]
    step = 1 if integer else 1e-9
    if rng.low is not None:
        values.append(rng.low if rng.low_open else rng.low - max(step, abs(rng.low) * 1e-9))
    if rng.high is not None:
        values.append(rng.high if rng.high_open else rng.high + max(step, abs(rng.high) * 1e-9))
    out = []
    for v in values:
        if not math.isnan(v) and rng.contains(v):
            continue
        out.append(str(int(v)) if integer and math.isfinite(v) else repr(v))
    return out


def _numeric(action):  # type: ignore[no-untyped-def]
    """(integer?, range) of a numeric flag, or None."""
    field = getattr(action, "option_field", None)
    if field is not None and action.type is not None:
        cls, name = field
        f = next(x for x in dataclasses.fields(cls) if x.name == name)
        return f.type.startswith("int"), f.metadata["range"]
    if hasattr(action, "option_range"):
        kind, rng = action.option_range
        return kind is int, rng or Range()
    return None


CASES = []
for command in BASE:
    for action in LEAVES[command]._actions:
        numeric = _numeric(action)
        if numeric is None:
            continue
        flag = action.option_strings[0]
        for text in _candidates(numeric[1], numeric[0]):
            value = [text, "4"] if action.nargs == 2 else [text]  # --fat-tree K SERVERS
            CASES.append(pytest.param(command, flag, value, id=f"{command} {flag}={text}"))


def test_every_numeric_flag_of_every_command_has_a_range() -> None:
    bare = [(cmd, a.option_strings) for cmd, p in LEAVES.items() for a in p._actions
            if a.type in (int, float)]
    assert bare == []
    numeric = {cmd for cmd, p in LEAVES.items() if any(_numeric(a) for a in p._actions)}
    assert numeric <= set(BASE), numeric - set(BASE)  # and every such command is tested
    assert SEED_RANGE == field_range(SolverOptions, "seed")


@pytest.mark.parametrize(("command", "flag", "value"), CASES)
def test_out_of_range_values_are_refused_before_any_work(command, flag, value, tmp_path: Path):
    prepare_cli_dir(tmp_path)
    before = _snapshot(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in BASE[command]] + [flag, *value]
    code, text = _run(argv)
    assert code == 2, (argv, text)
    assert text.count("\n") == 1 and flag in text and "Traceback" not in text, text
    assert _snapshot(tmp_path) == before


def _param_cases() -> list:  # type: ignore[type-arg]
    """Every numeric builder parameter (its first family) at the same values, as --param."""
    from simulator.cluster.families import BUILDERS

    first: dict[str, tuple[str, object]] = {}
    for family, fam in BUILDERS.items():
        for p in fam.params:
            if p.range is not None:
                first.setdefault(p.name, (family, p))
    return [pytest.param(family, p.name, text, id=f"{family} {p.name}={text}")
            for family, p in first.values()
            for text in _candidates(p.range, p.type is int)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("family", "name", "text"), _param_cases())
def test_topology_params_outside_their_range_are_refused(family, name, text, tmp_path: Path):
    before = _snapshot(tmp_path)
    out = tmp_path / "c.json"
    code, err = _run(["topology", "build", family, "--param", f"{name}={text}", "--out", str(out)])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    # the parameter and its range or type, or (a huge size) the memory the cluster would take
    assert f"parameter {name}" in err or "needs at least" in err, err
    assert _snapshot(tmp_path) == before
