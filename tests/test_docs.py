"""The documentation stays true: examples run, links resolve, generated pages are current.

Examples are the ``<!-- test -->`` blocks of README.md and docs/ (``tests/docs_examples.py``
says how they run); each page's examples run in a fresh directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from commands_reference import PAGE as COMMANDS_PAGE
from commands_reference import REGENERATE as COMMANDS_REGENERATE
from commands_reference import render as render_commands
from docs_examples import ROOT, TEST_MARK, blocks, matches, run_page
from docs_tables import REGENERATE as TABLES_REGENERATE
from docs_tables import fill

README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
RUNNABLE = [p for p in PAGES if any(TEST_MARK in b.marks for b in blocks(p))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _unfenced(page: Path) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def _prose(page: Path) -> str:
    """The page without any code (links in code are not links)."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(page))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", _unfenced(page), flags=re.M)}


def _links(page: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) of every relative link of the page."""
    out = []
    for target in _LINK.findall(_prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path).resolve() if path else page, anchor))
    return out


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into docs/ (at most 250)"


@pytest.mark.parametrize("page", RUNNABLE, ids=[_rel(p) for p in RUNNABLE])
def test_examples_run(page: Path, tmp_path: Path) -> None:
    assert run_page(page, tmp_path) > 0


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for target, anchor in _links(page):
            if not target.exists():
                broken.append(f"{_rel(page)}: {target} does not exist")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{_rel(page)}: no heading #{anchor} in {_rel(target)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen, todo = {README.resolve()}, [README.resolve()]
    while todo:
        page = todo.pop()
        for target, _ in _links(page):
            if target.suffix == ".md" and target.exists() and target not in seen:
                seen.add(target)
                todo.append(target)
    unreachable = [_rel(p) for p in PAGES if p.resolve() not in seen]
    assert not unreachable, f"not linked from README.md (directly or through docs): {unreachable}"


def test_commands_reference_is_current() -> None:
    assert COMMANDS_PAGE.read_text() == render_commands(), (
        f"docs/reference/commands.md differs from the parsers; {COMMANDS_REGENERATE}")


def test_readme_command_table_has_every_command() -> None:
    from commands_reference import leaves

    from experiments.cli import build_parser

    rows = [ln for ln in README.read_text().splitlines() if ln.startswith("| `moe-netsim ")]
    missing = []
    for parser, _ in leaves(build_parser()):
        words = parser.prog.split()[1:]
        if not any(f"moe-netsim {words[0]}" in r and all(w in r for w in words) for r in rows):
            missing.append(parser.prog)
    assert not missing, f"README.md's command table lacks {missing} (one row each, or a|b)"


def test_generated_tables_are_current() -> None:
    stale = [_rel(p) for p in PAGES if fill(p.read_text(), _rel(p)) != p.read_text()]
    assert not stale, f"generated tables out of date in {stale}; {TABLES_REGENERATE}"


def test_every_strategy_is_documented() -> None:
    from placement import STRATEGIES

    page = (ROOT / "docs/reference/strategies.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.M))
    missing = sorted(set(STRATEGIES) - listed)
    assert not missing, f"docs/reference/strategies.md does not describe {missing}"


def test_every_solve_status_is_documented() -> None:
    from placement import SolveStatus

    page = (ROOT / "docs/reference/strategies.md").read_text()
    table = page.split("| status | meaning |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    assert listed == {s.value for s in SolveStatus}, "statuses in docs/reference/strategies.md"


def test_console_output_matching() -> None:
    """The ``...`` rules of docs examples, by hand."""
    assert matches("a\n...\nc", "a\nb1\nb2\nc\n")
    assert matches("a\n...\nc", "a\nc")
    assert matches("x ... z", "x yyy z")
    assert not matches("a\nc", "a\nb\nc")
    assert not matches("x ... z", "x y")
