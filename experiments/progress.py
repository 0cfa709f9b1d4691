"""Progress bars for the commands that can run longer than a few seconds (tqdm, on stderr).

A bar is drawn only when stderr is a terminal, so logs, pipes and tests stay clean;
``--progress`` draws it anyway (one line per update on a non-terminal) and ``-q/--quiet``
turns bars and the informational stderr lines off.  Results on stdout are never affected.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def add_progress_arguments(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``--progress`` for a command that reports progress."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true",
                   help="No progress bar and no informational lines on stderr.")
    g.add_argument("--progress", action="store_true",
                   help="Draw the progress bar even when stderr is not a terminal.")


@dataclass(frozen=True)
class Feedback:
    """What a command may tell the user on stderr while it works."""

    bars: bool = False  # draw progress bars
    notes: bool = True  # print informational lines

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Feedback:
        quiet = bool(getattr(args, "quiet", False))
        forced = bool(getattr(args, "progress", False))
        return cls(bars=not quiet and (forced or sys.stderr.isatty()), notes=not quiet)

    def note(self, message: str) -> None:
        """One informational line on stderr (kept clear of a bar being drawn)."""
        if not self.notes:
            return
        if self.bars:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def bar(self, total: float | None, desc: str, unit: str = "it", **kw: Any) -> Any:
        """A tqdm bar (a silent one when bars are off); use as a context manager."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not self.bars,
                    dynamic_ncols=True, leave=True, **kw)

    def iterate(self, items: Iterable[T], total: float | None, desc: str, unit: str = "it",
                weight: Any = None) -> Iterator[T]:
        """Yield ``items`` while advancing a bar by ``weight(item)`` (default 1) each."""
        with self.bar(total, desc, unit, unit_scale=True) as bar:
            for item in items:
                yield item
                bar.update(1 if weight is None else weight(item))

    def tokens(self, blocks: Iterable[T], total: float | None, desc: str) -> Iterator[T]:
        """Yield trace ``blocks`` while a bar counts their tokens (of ``total``, if known)."""
        return self.iterate(blocks, total, desc, "tok", weight=lambda b: b.num_tokens)

    @contextmanager
    def ticking(self, limit_s: float | None, desc: str, delay_s: float = 0.0) -> Iterator[None]:
        """A bar of elapsed seconds (up to ``limit_s``) while a call without progress runs,
        shown once it has run ``delay_s`` (a quick call then shows none)."""
        if not self.bars:
            yield
            return
        stop = threading.Event()
        fmt = "{desc}: {n:.0f} s" + ("" if limit_s is None else " of at most {total:.0f} s {bar}")
        with self.bar(limit_s, desc, "s", bar_format=fmt, delay=delay_s) as bar:
            t0 = time.perf_counter()

            def show() -> None:
                elapsed = time.perf_counter() - t0
                if elapsed >= delay_s:
                    bar.n = min(elapsed, limit_s or float("inf"))
                    bar.refresh()

            def tick() -> None:
                while not stop.wait(0.5):
                    show()

            thread = threading.Thread(target=tick, daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
                show()
