"""Subcommands of `moe-netsim trace` (being built; see README)."""

from __future__ import annotations

import argparse


def register(trace_sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `trace` group."""
