"""The ``moe-netsim`` command: parses arguments, calls the library, writes files.

Each subcommand lives in ``experiments/commands/<name>.py`` with a ``register(subparsers)``
function that adds its parser and sets ``func``.  Every way a run can fail on the user's side
ends as ONE line on stderr and a non-zero exit code, never a traceback:

* bad arguments (argparse) and bad input (:class:`InputError`): ``moe-netsim: error: ...``,
  exit code 2;
* an operating-system error (permission denied, disk full): exit code 1;
* Ctrl-C: exit code 130;
* anything else is a bug: one line naming the exception, exit code 1; set
  ``MOE_NETSIM_TRACEBACK=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from experiments.commands import demo, place, report, simulate, study, sweep, topology, trace
from traces.infra.errors import InputError

COMMANDS = [demo, trace, topology, place, simulate, study, sweep, report]

TRACEBACK_ENV = "MOE_NETSIM_TRACEBACK"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong and where to look for help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"moe-netsim: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moe-netsim",
        description="Topology-aware MoE expert placement and trace-replay network simulation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def command_paths(parser: argparse.ArgumentParser | None = None) -> list[tuple[str, ...]]:
    """Every runnable command, e.g. ``("place",)``, ``("trace", "synth")``, in help order."""
    out: list[tuple[str, ...]] = []

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append(path)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*path, name))

    walk(parser or build_parser(), ())
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"moe-netsim: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moe-netsim: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"moe-netsim: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug; still one line unless asked for more
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(
            f"moe-netsim: internal error: {type(exc).__name__}: {_one_line(str(exc))}"
            f" (a bug; rerun with {TRACEBACK_ENV}=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
