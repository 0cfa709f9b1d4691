"""``moe-netsim study paper``: the reference paper's grid; shared execution flags and output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.commands.simulate import scheduler_address
from experiments.options import SEED_RANGE, add_number, add_option
from experiments.outputs import STUDY_RUN, add_output_argument, claim_output
from experiments.progress import Feedback, add_progress_arguments
from experiments.study_trace import TraceSection
from traces.infra.errors import InputError
from traces.infra.options import Range
from traces.infra.protected import protect
from traces.origin_models import OriginOptions

# Exit status of a study or sweep that finished with failed cells (every other cell's results,
# the merged tables and the report are written); 0 when every cell succeeded.
EXIT_CELLS_FAILED = 3

if TYPE_CHECKING:
    from experiments.studies import Study


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `study` and `sweep`: where and how the cells run."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       type=scheduler_address,
                       help="Run on this existing Dask scheduler, unchanged.")
    where.add_argument("--serial", action="store_true",
                       help="Run the cells one after another in this process (no Dask).")
    add_number(p, "--workers", int, 2, "Worker processes of the local Dask cluster.", "processes",
               Range(1, 1024))
    p.add_argument("--overwrite", action="store_true",
                   help="Start again in an existing study run directory (otherwise it is"
                        " resumed); other directories are never replaced.")
    p.add_argument("--no-report", action="store_true", help="Skip the figures and report.html.")
    add_progress_arguments(p)


class CellProgress:
    """The study runner's ``progress(done, total, label)`` as a bar of finished cells."""

    def __init__(self, feedback: Feedback) -> None:
        self.feedback = feedback
        self.bar: Any = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.bar is None:
            self.bar = self.feedback.bar(total, "cells", "cell", initial=done)
        self.bar.n = done
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.refresh()
        if done >= total:
            self.bar.close()


def execute(study: Study, out: Path, args: argparse.Namespace) -> int:
    """Run a validated study into ``out``, write the report, print the summary."""
    from experiments.studies import run_study
    from experiments.studies.paper import PAPER_COLUMNS

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    own = (out / "inputs").resolve()  # traces a built-in study imported itself (kept)
    for cell in study.cells:  # the trace files a study file names are inputs too
        for key in ("source", "fit_source"):
            value = cell.config["trace"].get(key)
            if value and value != "synthetic" and not Path(value).resolve().is_relative_to(own):
                protect(f"trace.{key}", value)
    claim_output(out, STUDY_RUN, args.overwrite, "--out")  # also when --out is the default
    feedback = Feedback.from_args(args)
    for note in study.skipped:
        feedback.note(f"not run: {note}")
    strategies = study.strategies
    if study.baseline not in strategies:
        print(f"warning: the baseline strategy {study.baseline!r} is not in this study, so the"
              " *_reduction_pct columns stay empty (set study.baseline to one of"
              f" {', '.join(sorted(strategies))})", file=sys.stderr)
    outcome = run_study(
        study, out, serial=args.serial, scheduler=args.scheduler, workers=args.workers,
        overwrite=args.overwrite, progress=CellProgress(feedback),
        note=feedback.note if feedback.notes else None,
        command="sweep" if hasattr(args, "study_file") else f"study {args.name}",
    )
    if outcome.cells_reused:
        feedback.note(f"resumed: {outcome.cells_reused} cells were already finished, ran"
                      f" {outcome.cells_run}")
    if not args.no_report:
        from experiments.report_runs import write_run_report

        write_run_report(out)
    shown = ("model", "model.preset", "topology", "topology.family", "strategy.name", "strategy",
             "trace")
    varied = [a for a in study.axes if a not in shown]
    cols = varied + [c for c in (*PAPER_COLUMNS, "failure") if c in outcome.results.columns]
    print(outcome.results[cols].to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    tail = "" if args.no_report else f" (open {out}/report.html)"
    print(f"\nwrote {out}/{tail}")
    if outcome.cells_failed:
        print(f"moe-netsim: {len(outcome.cells_failed)} of {len(study.cells)} cells failed (status"
              " 'failed', reason in the failure column of results.parquet and in report.html);"
              " re-run the same command to retry them", file=sys.stderr)
        return EXIT_CELLS_FAILED
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `study` subcommand."""
    from experiments.commands import study_failures

    study = sub.add_parser(
        "study",
        help="Run a built-in study: `paper` (the reference paper's grid), `failures`.",
        description="Built-in studies: `paper` reproduces the reference paper's grid;"
        " `failures` replays every strategy on a fabric and on each of its single failures.",
    )
    names = study.add_subparsers(dest="name", required=True, metavar="STUDY")
    p = names.add_parser(
        "paper",
        help="The reference paper's grid (models x topologies x origins x strategies).",
        description=(
            "paper: two models (DeepSeekMoE-16B, DeepSeek-R1) x four topologies (fat-tree,"
            " fat-tree-sparse, dragonfly, dragonfly-sparse) x two origin scenarios (even, tenant"
            " locality) x strategies (round-robin, greedy, ilp, ilp-load and this project's own:"
            " eplb, ilp-bytes, ilp-bottleneck, ilp-origin, replicas), plus real ESFT rows when"
            " the data is present. Every saving stands beside its ceiling."
            " Topology families and strategies missing from this build are listed as not run."
            " Per cell: hops per token, network bytes, max link utilisation, p50/p99 MoE"
            " latency, solve time, reductions vs. round-robin."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="Small clusters, few tokens, four strategies on the two sparse fabrics.")
    add_output_argument(p, "--out", STUDY_RUN, default=None,
                        help="Run directory (default runs/paper, runs/paper-quick).")
    p.add_argument("--trace", type=Path, default=None,
                   help="Replay this native trace file instead of the synthetic generator"
                        " (its model replaces the paper's two).")
    p.add_argument("--fit", "--fit-trace", dest="fit_trace", type=Path, default=None,
                   help="Fit the placement on this trace or SGLang load statistics (.json);"
                        " the replay then starts at the first token of the replayed trace"
                        " (--fit-trace is the older name of the same flag).")
    add_option(p, TraceSection, "replay_tokens", "--tokens", default=None,
               help="Tokens replayed per cell (as many again are used to fit).")
    add_number(p, "--seed", int, 0, "Seed of traces and solvers.", "", SEED_RANGE)
    add_option(p, OriginOptions, "origins", "--origins",
               more=" Replaces the study's two origin scenarios (even, tenant locality) by this"
               " one and drops the ESFT rows.")
    esft = p.add_mutually_exclusive_group()
    esft.add_argument("--esft", type=Path, default=None,
                      help="ESFT routing folder (tasks intent, law, summary, translation) for"
                           " the real-data rows; default: shared/data/esft-routing beside the"
                           " checkout (or under $MOE_NETSIM_SHARED_DATA) when present.")
    esft.add_argument("--no-esft", action="store_true", help="Leave out the real-data rows.")
    p.add_argument("--model", action="append", default=None, dest="models",
                   help="Run only this model of the paper's two (repeatable).")
    p.add_argument("--strategy", action="append", default=None, dest="strategies",
                   help="Run only this strategy row (repeatable; default: every row).")
    add_execution_arguments(p)
    p.set_defaults(func=run)
    study_failures.register(names)


def run(args: argparse.Namespace) -> int:
    from experiments.studies.esft import default_esft_dir
    from experiments.studies.paper import PAPER_MODELS, paper_study

    out = args.out or Path("runs") / ("paper-quick" if args.quick else "paper")
    esft = None if args.no_esft else (args.esft or default_esft_dir())
    if args.esft is not None and not args.esft.is_dir():
        raise InputError(f"--esft {args.esft}: not a folder")
    claim_output(out, STUDY_RUN, args.overwrite, "--out")  # before ESFT imports write into it
    study = paper_study(
        quick=args.quick, trace=args.trace, fit_trace=args.fit_trace, tokens=args.tokens,
        seed=args.seed, model_names=tuple(args.models or PAPER_MODELS),
        strategy_names=tuple(args.strategies) if args.strategies else None,
        esft_dir=esft, inputs_dir=out / "inputs", origins=args.origins,
    )
    Feedback.from_args(args).note(f"paper study: {len(study.cells)} cells")
    return execute(study, out, args)
