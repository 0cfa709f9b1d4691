"""Every rule of experiments.conflicts.CONFLICTS: the pair is refused before any work (exit 2,
one line naming both flags, nothing written); each flag alone (or beside a value that does not
contradict it) is not refused for that reason.  Every flag a rule names exists on its command.
In-process (experiments.cli.main)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_input_protection import _run, _snapshot
from test_interruptions import _closed_port

from experiments.cli import build_parser
from experiments.conflicts import CONFLICTS, Conflict
from experiments.outputs import leaf_parser

# Arguments that parse (the files need not exist: conflicts are refused before they are read).
BASE = {
    "simulate": ["simulate", "--trace", "{d}/t.parquet", "--topology", "{d}/c.json",
                 "--layout", "{d}/l.csv", "--out", "{d}/run"],
    "trace synth": ["trace", "synth", "--model", "deepseek-moe-16b", "--tokens", "8",
                    "--out", "{d}/s.parquet"],
    "trace record": ["trace", "record", "--model-dir", "{d}/model", "--text", "{d}/x.txt",
                     "--out", "{d}/r.parquet"],
    "topology draw": ["topology", "draw", "{d}/c.json", "--out", "{d}/c.png"],
    "rebalance": ["rebalance", "--trace", "{d}/t.parquet", "--topology", "{d}/c.json",
                  "--out", "{d}/rb"],
    "study paper": ["study", "paper", "--quick", "--trace", "{d}/t.parquet", "--out", "{d}/st"],
    "sweep": ["sweep", "{d}/study.toml", "--out", "{d}/sw"],
}
VALUE = {
    "--expert-time-per-route-s": "1e-6", "--gpu-flops-per-s": "1e14", "--inflight": "2",
    "--chunk-bytes": "4096", "--window-s": "0.001", "--zipf": "0.5", "--curve": "esft",
    "--curve-sd": "0.2", "--max-activation": "0.5", "--load-stats": "{d}/counts.json",
    "--fit": "{d}/t.parquet", "--modes": "4", "--mode-sigma": "2", "--drift-ramp": "3",
    "--phase-change": "5", "--seed": "1", "--config": "{d}/config.json", "--strategy": "ilp",
    "--metric": "bytes", "--link-load": "{d}/links.parquet", "--threshold": "0.1",
    "--interval": "10", "--flow-tolerance": "0.1", "--serial": None,
    "--scheduler": f"tcp://127.0.0.1:{_closed_port()}", "--workers": "3",
}
# A value of the partner that does not contradict the rule's flag.
AGREEING = {"--mode": "des", "--curve": "esft", "--modes": "4"}
AGREEING_MODE = {"--flow-tolerance": "flow"}  # options of one mode only
AGREEING_POLICY = {"--threshold": "threshold", "--interval": "periodic"}


def _option(flag: str, value: str | None) -> list[str]:
    return [flag] if value is None else [flag, value]


def _argv(rule: Conflict, d: Path, *options: list[str]) -> list[str]:
    base = BASE[rule.command]
    if rule.command == "trace record" and "--config" in (o[0] for o in options):
        base = [a for a in base if a not in ("--model-dir", "{d}/model")]
    return [a.replace("{d}", str(d)) for a in base + [x for o in options for x in o]]


def _pair(rule: Conflict) -> list[list[str]]:
    flag = _option(rule.flag, VALUE[rule.flag])
    if rule.needs:
        return [flag]
    other = VALUE[rule.other] if rule.values is None else rule.values[0]
    return [flag, _option(rule.other, other)]


IDS = [f"{r.command} {r.flag} {'without' if r.needs else 'with'} {r.other}" for r in CONFLICTS]


@pytest.mark.parametrize("rule", CONFLICTS, ids=IDS)
def test_the_pair_is_refused_in_one_line_naming_both_flags(rule: Conflict, tmp_path: Path):
    before = _snapshot(tmp_path)
    argv = _argv(rule, tmp_path, *_pair(rule))
    code, err = _run(argv)
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and rule.flag in err and rule.other in err, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("rule", CONFLICTS, ids=IDS)
def test_without_its_partner_the_flag_is_not_refused_for_it(rule: Conflict, tmp_path: Path):
    options = [_option(rule.flag, VALUE[rule.flag])]
    if rule.needs:
        options.append(_option(rule.other, VALUE[rule.other]))
    elif rule.values is not None:
        agree = (AGREEING_POLICY[rule.flag] if rule.other == "--policy"
                 else AGREEING_MODE.get(rule.flag, AGREEING[rule.other]))
        options.append(_option(rule.other, agree))
    _code, err = _run(_argv(rule, tmp_path, *options))
    assert rule.message() not in err, err


def test_every_flag_of_a_rule_is_an_option_of_its_command():
    parser = build_parser()
    for rule in CONFLICTS:
        args = parser.parse_args([a.replace("{d}", "/x") for a in BASE[rule.command]])
        strings = {s for a in leaf_parser(parser, args)._actions for s in a.option_strings}
        assert {rule.flag, rule.other} <= strings, rule
