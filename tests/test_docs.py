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

README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
RUNNABLE = [p for p in PAGES if any(TEST_MARK in b.marks for b in blocks(p))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _prose(page: Path) -> str:
    """The page without its fenced code blocks (links in code are not links)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", _prose(page), flags=re.M)}


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


def _table_names(page: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", (ROOT / page).read_text(), flags=re.M))


def test_every_strategy_family_and_model_field_is_documented() -> None:
    from dataclasses import fields

    from placement import STRATEGIES
    from simulator.cluster.families import BUILDERS
    from traces import ModelSpec

    assert set(STRATEGIES) <= _table_names("docs/reference/strategies.md")
    assert set(BUILDERS) <= _table_names("docs/reference/cluster-format.md")
    assert {f.name for f in fields(ModelSpec)} <= _table_names("docs/reference/trace-format.md")


def test_console_output_matching() -> None:
    """The ``...`` rules of docs examples, by hand."""
    assert matches("a\n...\nc", "a\nb1\nb2\nc\n")
    assert matches("a\n...\nc", "a\nc")
    assert matches("x ... z", "x yyy z")
    assert not matches("a\nc", "a\nb\nc")
    assert not matches("x ... z", "x y")
