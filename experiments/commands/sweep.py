"""``moe-netsim sweep STUDY.toml``: the factorial grid of a study file, on Dask or serially."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.commands.study import add_execution_arguments, execute
from experiments.outputs import STUDY_RUN, add_output_argument
from experiments.progress import Feedback


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` subcommand."""
    p = sub.add_parser(
        "sweep",
        help="Run the factorial grid of a TOML study file (Dask; resumable).",
        description=(
            "Validate the study file (every cell) before any work starts, then run every cell"
            " that is not finished yet in the run directory: on a local Dask cluster of"
            " --workers processes (loopback only), on an existing cluster (--scheduler), or in"
            " this process (--serial).  One Parquet row per cell is kept as cells finish;"
            " killing and re-running loses nothing that finished.  Writes results.parquet,"
            " detail tables, figures and report.html."
        ),
    )
    p.add_argument("study_file", type=Path,
                   help="TOML study file (see docs/reference/study-files.md).")
    add_output_argument(p, "--out", STUDY_RUN, default=None,
                        help="Run directory (default: runs/<study file name>).")
    add_execution_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from experiments.studies import load_study_file

    study = load_study_file(args.study_file)
    out = args.out or Path("runs") / args.study_file.stem
    Feedback.from_args(args).note(
        f"{study.name}: {len(study.cells)} cells over axes {', '.join(study.axes) or '(none)'}")
    return execute(study, out, args)
