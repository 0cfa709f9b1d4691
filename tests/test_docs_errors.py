"""docs/reference/errors.md lists exactly the bad-input cases, laid out as the generator does.

Each case's message is checked against its row by ``tests/test_bad_input.py`` (which runs the
case anyway); this file checks the page as a whole without running anything.
"""

from __future__ import annotations

from badinput import CASES
from error_catalogue import PAGE, REGENERATE, parse, render


def test_error_page_lists_exactly_the_cases() -> None:
    rows = parse(PAGE.read_text())
    ids = [c.id for c in CASES]
    missing = [i for i in ids if i not in rows]
    stale = [i for i in rows if i not in set(ids)]
    assert not missing, f"docs/reference/errors.md lacks {missing}; {REGENERATE}"
    assert not stale, f"docs/reference/errors.md lists cases that are gone: {stale}; {REGENERATE}"


def test_error_page_is_laid_out_as_generated() -> None:
    rows = parse(PAGE.read_text())
    if set(rows) == {c.id for c in CASES}:
        assert PAGE.read_text() == render(rows), (
            f"docs/reference/errors.md was edited by hand; {REGENERATE}")
