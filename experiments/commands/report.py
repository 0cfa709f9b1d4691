"""``moe-netsim report RUN_DIR...``: figures and a self-contained HTML page for run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.outputs import add_output_argument, run_directory_kind
from experiments.progress import add_progress_arguments


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    p = sub.add_parser(
        "report",
        help="Write report.html and PNG figures for finished run directories (study, sweep,"
             " demo, simulate, rebalance; several rebalance runs side by side).",
        description=(
            "Reads the tables of a finished run directory and writes report.html with the"
            " figures (PNG, beside it). study/sweep: hops, bytes, link utilisation and p99"
            " latency per strategy and setup, per-link load, latency CDFs, MoE-layer timelines,"
            " expert-load heatmaps and the result tables. rebalance: network bytes over time,"
            " migration bytes and stalls per rebalance (and p99 latency with --mode des); give"
            " several rebalance run directories (one per policy) and --out to compare them on"
            " one page."
        ),
    )
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="Run directory of `moe-netsim study`, `sweep`, `demo`, `simulate` or"
                        " `rebalance` (several: rebalance runs only, with --out).")
    add_output_argument(p, "--out", run_directory_kind("report"), default=None,
                        help="Directory for the page comparing several rebalance runs.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace an --out directory an earlier `report` wrote.")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from experiments.progress import Feedback

    feedback = Feedback.from_args(args)
    dirs = args.run_dirs
    if len(dirs) == 1 and args.out is None:
        from experiments.report_rebalance import is_rebalance_run

        if not is_rebalance_run(dirs[0]):
            from experiments.report_runs import write_run_report

            # a study or sweep counts its figures' steps, the others show seconds
            print(f"wrote {write_run_report(dirs[0], feedback)}")
            return 0
    # rebalance pages: no count to show, the seconds the page has taken so far
    with feedback.ticking(None, "report: tables and figures"):
        return _run_rebalance(args)


def _run_rebalance(args: argparse.Namespace) -> int:
    from traces.infra.errors import InputError

    dirs = args.run_dirs
    if len(dirs) == 1 and args.out is None:
        from experiments.report_rebalance import write_rebalance_report

        print(f"wrote {write_rebalance_report(dirs, dirs[0])}")
        return 0
    if args.out is None:
        raise InputError("report: several run directories are compared on one page; give"
                         " --out DIR for it")
    from experiments.outputs import run_directory, write_json
    from experiments.report_rebalance import write_rebalance_report
    from experiments.versions import versions

    with run_directory(args.out, args.overwrite) as work:
        write_rebalance_report(dirs, work)
        write_json(work / "meta.json", {"command": "moe-netsim report", "status": "complete",
                                        "runs": [str(d) for d in dirs],
                                        "versions": versions()})
    print(f"wrote {args.out / 'report.html'}")
    return 0
