"""What users read cites only what they have: no source file, page or message points at a
document outside the project (the demo's text cited a "design.md" no clone contains)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("design.md", "../shared/docs", "style guide")


def test_no_file_cites_a_document_outside_the_project() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".txt", ".html", ".cfg"}:
            continue
        if name == "tests/test_no_private_references.py":
            continue
        text = path.read_text(errors="replace").lower()
        found += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert not found, found
