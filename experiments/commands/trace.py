"""``moe-netsim trace ...``: import, record, synthesise and summarise routing traces."""

from __future__ import annotations

import argparse

from experiments.commands import trace_concat, trace_export, trace_import, trace_synth


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="Import, record, synthesise and summarise routing traces.")
    trace_sub = p.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
    trace_import.register(trace_sub)
    trace_synth.register(trace_sub)
    trace_export.register(trace_sub)
    trace_concat.register(trace_sub)
