"""The ``moe-netsim`` command: parses arguments, calls the library, writes files.

Each subcommand lives in ``experiments/commands/<name>.py`` with a ``register(subparsers)``
function that adds its parser and sets ``func``.  Every way a run can fail on the user's side
ends as ONE line on stderr and a non-zero exit code, never a traceback:

* bad arguments (argparse) and bad input (:class:`InputError`): ``moe-netsim: error: ...``,
  exit code 2;
* an operating-system error about the user's paths (permission denied, disk full, read-only
  file system): the same, naming the user's path (never a hidden temporary file), exit code 2;
* Ctrl-C at any moment, start-up imports included: ``moe-netsim: interrupted``, exit code 130;
* anything else is a bug: one line naming the exception, exit code 1; set
  ``MOE_NETSIM_TRACEBACK=1`` to see the traceback.

Before a command runs, its path arguments are registered as inputs that no write may touch and
its declared outputs are checked (:func:`experiments.outputs.claim_outputs`).  A closed standard
output (``moe-netsim place ... | head -1``) is not an error: the rest of the output is dropped
and the command still writes its files.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

TRACEBACK_ENV = "MOE_NETSIM_TRACEBACK"


class _HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default (unless it has none, is empty text (the help
    says what empty means) or is an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default in (None, False, "") or default == []
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong and where to look for help), and
    ``--help`` shows defaults (sub-parsers inherit both)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"moe-netsim: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from experiments.commands import (
        demo,
        place,
        rebalance,
        report,
        simulate,
        study,
        sweep,
        topology,
        trace,
    )

    parser = _Parser(
        prog="moe-netsim",
        description="Topology-aware MoE expert placement and trace-replay network simulation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, trace, topology, place, simulate, rebalance, study, sweep, report):
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


def _silence_stdout() -> None:
    """The reader of our standard output went away: send the rest to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
    finally:
        os.close(devnull)


class _PipeSafeStdout:
    """Standard output that turns a broken pipe into silence instead of an error."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        try:
            return self.inner.write(text)
        except BrokenPipeError:
            _silence_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            self.inner.flush()
        except BrokenPipeError:
            _silence_stdout()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _os_error_line(exc: OSError, parser: argparse.ArgumentParser, args: argparse.Namespace
                   ) -> str:
    """``--out PATH: <reason>`` (or the input's flag; ``PATH: FILE: <reason>`` for a file
    inside a run directory): the user's flag and path, never a temporary."""
    from experiments.outputs import flag_naming

    where = ""
    if exc.filename:
        found = flag_naming(exc.filename, parser, args)
        where = f"{exc.filename}: "
        if found is not None:
            flag, path = found
            head = f"{flag} {path}".strip()
            inside = "" if os.path.abspath(exc.filename) == os.path.abspath(path) else where
            where = f"{head}: {inside}"
    return f"moe-netsim: error: {where}{exc.strerror or _one_line(str(exc))}"


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (every partial output is removed on the way out),
    and no ``except Exception`` can swallow it."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    saved = sys.stdout
    sys.stdout = _PipeSafeStdout(saved)  # type: ignore[assignment]
    on_term = None
    if threading.current_thread() is threading.main_thread():
        on_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("moe-netsim: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("moe-netsim: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        sys.stdout.flush()
        sys.stdout = saved


def _run(argv: Sequence[str] | None) -> int:
    # Imported here, not at the top, so that Ctrl-C during the imports is caught by main().
    from experiments.conflicts import check_conflicts
    from experiments.outputs import claim_outputs, command_inputs
    from traces.infra.errors import InputError
    from traces.infra.protected import protecting

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        check_conflicts(parser, args, argv)
        with protecting(command_inputs(parser, args)):
            claim_outputs(args)
            return int(args.func(args) or 0)
    except InputError as exc:
        print(f"moe-netsim: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(_os_error_line(exc, parser, args), file=sys.stderr)
        return 2
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
