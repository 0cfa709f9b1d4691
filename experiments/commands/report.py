"""``moe-netsim report RUN_DIR``: figures and a self-contained HTML page for a study run."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    p = sub.add_parser(
        "report",
        help="Write report.html and PNG figures for a finished study or sweep run directory.",
        description=(
            "Reads results.parquet and the detail tables of a `study` or `sweep` run directory"
            " and writes report.html with the figures (PNG, beside it): hops, bytes, link"
            " utilisation and p99 latency per placer and setup, per-link load, latency CDFs,"
            " MoE-layer timelines, expert-load heatmaps and the result tables."
        ),
    )
    p.add_argument("run_dir", type=Path, help="Run directory of `moe-netsim study` or `sweep`.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from experiments.report_runs import write_run_report

    page = write_run_report(args.run_dir)
    print(f"wrote {page}")
    return 0
