"""``moe-netsim trace concat``: traces one after another in time (a workload shift)."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.outputs import TRACE_FILE, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from traces.concat import MISSING_STEPS, concat_trace_files
from traces.infra.errors import InputError


def register(trace_sub: argparse._SubParsersAction) -> None:
    """Add ``concat`` to the ``trace`` group."""
    p = trace_sub.add_parser(
        "concat",
        help="Join traces one after another in time; steps and sequence ids continue.",
        description=(
            "Write the input traces one after another: each input's steps start after the"
            " previous input's last step and its sequence ids after the previous largest, so"
            " e.g. several imported ESFT tasks become one workload that shifts. Inputs must"
            " share the model and the origin/gate columns. Example: moe-netsim trace concat"
            " intent.parquet law.parquet --missing-steps sequence --out shift.parquet"
        ),
    )
    p.add_argument("inputs", type=Path, nargs="+", help="Native traces, in time order.")
    add_output_argument(p, "--out", TRACE_FILE, required=True, help="Output trace (.parquet).")
    p.add_argument(
        "--missing-steps",
        choices=MISSING_STEPS,
        default="refuse",
        help="Inputs without a step column: refuse (default), or one step per sequence.",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a trace file moe-netsim wrote.")
    add_progress_arguments(p)
    p.set_defaults(func=run_concat)


def run_concat(args: argparse.Namespace) -> int:
    out: Path = args.out  # declared: inputs and other files under its name are refused before
    if out.suffix != ".parquet":
        raise InputError(f"{out}: the output must be a .parquet file")
    from traces.io import read_trace_meta

    feedback = Feedback.from_args(args)

    def through(blocks):  # noqa: ANN001, ANN202 - Iterator[RoutingTrace], once inputs are checked
        return feedback.tokens(blocks, sum(read_trace_meta(f)[1] for f in args.inputs),
                               "trace concat")

    n = concat_trace_files(args.inputs, out, args.missing_steps, through)
    print(f"wrote {n:,} tokens of {len(args.inputs)} traces to {out}")
    return 0
