"""Every command with each input path argument pointed at each other input of the same command
(a cluster where a trace belongs, a layout where the model file belongs, ...): exit 2 with one
line and no traceback (or a valid result), no input touched, nothing left behind on error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_input_protection import COMMANDS, _prepare, _run, _snapshot

INPUT = re.compile(r"^\{d\}/(.+)$")

CASES = []
for c in COMMANDS:
    slots = [i for i, a in enumerate(c.argv) if INPUT.match(a)]
    names = [INPUT.match(c.argv[i]).group(1) for i in slots]  # type: ignore[union-attr]
    for i, own in zip(slots, names, strict=True):
        for other in names:
            if other != own:
                CASES.append(pytest.param(c, i, other, id=f"{c.name}: {own} -> {other}"))


@pytest.mark.parametrize(("c", "slot", "other"), CASES)
def test_an_input_given_where_another_belongs(c, slot: int, other: str, tmp_path: Path) -> None:
    d = tmp_path / "case"
    d.mkdir()
    _prepare(d)
    argv = [a.replace("{d}", str(d)) for a in c.argv]
    argv[slot] = str(d / other)
    argv += [c.outputs[0], str(tmp_path / "out" / c.out_names[0])]
    before = _snapshot(d)
    code, text = _run(argv)
    assert code in (0, 2), (argv, text)
    assert "Traceback" not in text and "internal error" not in text, text
    assert _snapshot(d) == before
    if code == 2:
        assert text.count("\n") == 1, text
        assert not (tmp_path / "out" / c.out_names[0]).exists()
