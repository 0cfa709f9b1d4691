"""The README's quickstart runs as written."""

from __future__ import annotations

import re

from conftest import ROOT


def test_readme_quickstart_runs(capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    exec(compile(code, "README quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert out.split()[0] == "optimal"
