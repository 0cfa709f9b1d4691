"""`moe-netsim study` (being built; see README)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `study` subcommand."""
