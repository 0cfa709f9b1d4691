"""The ``moe-netsim`` command: parses arguments, calls the library, writes files.

Each subcommand lives in ``experiments/commands/<name>.py`` with a ``register(subparsers)``
function that adds its parser and sets ``func``.  Input errors (:class:`InputError`) are
printed as one line on stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from experiments.commands import demo, place, report, simulate, study, sweep, topology, trace
from traces.errors import InputError

COMMANDS = [demo, trace, topology, place, simulate, study, sweep, report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-netsim",
        description="Topology-aware MoE expert placement and trace-replay network simulation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"moe-netsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moe-netsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
