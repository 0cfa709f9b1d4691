"""``moe-netsim study failures``: every strategy on the healthy fabric and each single failure."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.commands.cluster_args import (
    add_cluster_arguments,
    cluster_from_args,
    cluster_label,
)
from experiments.failures_config import FailureStudyConfig
from experiments.options import SEED_RANGE, add_number, add_option
from experiments.outputs import (
    add_output_argument,
    run_directory,
    run_directory_kind,
    write_json,
    write_parquet,
)
from experiments.progress import Feedback, add_progress_arguments
from experiments.study_trace import TraceSection
from placement.options import SolverOptions
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError
from traces.origin_models import OriginOptions

COMMAND = "study failures"


def register(names: argparse._SubParsersAction) -> None:
    """Add ``study failures`` to the study subcommands."""
    p = names.add_parser(
        "failures",
        help="Replay every strategy on the healthy fabric and each single failure of a class.",
        description="Place with every strategy on the healthy cluster, then for every single"
        " failure of --class (each network link, switch or server) replay the healthy layout"
        " (kept; repaired after a server failure) and a re-placed one with the analytic"
        " counter: network bytes with and without de-duplication, bytes on network links, the"
        " busiest link and the bandwidth bound; the failures with the highest bound are"
        " replayed in the DES for p99 latency. Reports healthy, mean and worst per strategy and"
        " which layouts are robust. Failures that cut GPUs off are listed, not replayed.",
    )
    add_cluster_arguments(p, required=True, help_file="Healthy cluster file (.json, .graphml).")
    add_option(p, FailureStudyConfig, "failure_class", "--class")
    p.add_argument("--strategy", action="append", default=None, dest="strategies",
                   help="A strategy (repeatable), or ilp|ilp-load|ilp-origin|ilp-bytes"
                        " with +robust (placed on the expected cost over the failures);"
                        " default: every strategy and ilp-load+robust (not for servers).")
    p.add_argument("--model", default=None,
                   help="Model preset of the synthetic trace (default deepseek-moe-16b).")
    p.add_argument("--trace", type=Path, default=None,
                   help="Native trace: fit on its first --tokens, replay the next --tokens.")
    p.add_argument("--fit", type=Path, default=None,
                   help="Fit on this trace or SGLang load statistics (.json) instead; the replay"
                        " then starts at the first token of the replayed trace.")
    add_option(p, TraceSection, "replay_tokens", "--tokens",
               help="Tokens replayed (and as many fitted on, unless --fit).")
    add_number(p, "--seed", int, 0, "Seed of the trace and solvers.", "", SEED_RANGE)
    add_option(p, OriginOptions, "origins", "--origins")
    add_option(p, FailureStudyConfig, "des_worst", "--des-worst")
    add_option(p, FailureStudyConfig, "robust_tolerance", "--robust-tolerance")
    add_option(p, TrafficConfig, "dispatch", "--dispatch")
    add_option(p, TrafficConfig, "multipath", "--multipath")
    add_option(p, SolverOptions, "time_limit_s", "--time-limit")
    add_option(p, SolverOptions, "threads", "--threads")
    add_output_argument(p, "--out", run_directory_kind(COMMAND), default=None,
                        help="Run directory (default runs/failures-<class>).")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a finished run directory of `study failures`.")
    p.add_argument("--no-report", action="store_true", help="Skip report.html and its figure.")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def _fit(args: argparse.Namespace, gpu_server: Any) -> tuple[Any, Any]:
    """The model and the fit/replay tokens, by the study cells' own rules."""
    from experiments.studies.cell import fit_and_replay
    from experiments.studies.sections import DEFAULT_MODEL
    from experiments.study_trace import TRACE_DEFAULTS
    from traces import model_preset
    from traces.io import read_trace_meta

    if args.tokens < 1:
        raise InputError(f"--tokens {args.tokens}: must be >= 1")
    trace = {**TRACE_DEFAULTS, "fit_tokens": args.tokens, "replay_tokens": args.tokens,
             "origins": args.origins or ""}
    if args.trace is not None:
        if not args.trace.is_file():
            raise InputError(f"--trace {args.trace}: trace file not found")
        if args.model is not None:
            raise InputError("--model: a replayed trace brings its own model; drop --model")
        meta, n = read_trace_meta(args.trace)
        need = args.tokens * (1 if args.fit else 2)
        if n < need:
            raise InputError(f"--trace {args.trace}: has {n} tokens, {need} needed (--tokens)")
        model = meta.model
        trace["source"] = str(args.trace)
    else:
        model = model_preset(args.model or DEFAULT_MODEL)
    if args.fit is not None:
        if not args.fit.is_file():
            raise InputError(f"--fit {args.fit}: file not found")
        trace["fit_source"] = str(args.fit)
    config = {"seed": args.seed, "trace": trace}
    return model, fit_and_replay(config, model, gpu_server)


def run(args: argparse.Namespace) -> int:
    from experiments.studies.estimates import des_replay_hop_events, failure_study_work
    from experiments.studies.failures import check_strategies, default_strategies, run_failure_study
    from experiments.studies.failures_report import summarize, write_report
    from simulator.cluster.failures import single_failures
    from simulator.cluster.paths import build_route_table
    from simulator.config import SimConfig
    from simulator.dispatch import scheme_note
    from traces.infra.limits import (
        OUT_DISK_FIX,
        PARQUET_FILE_MIN_BYTES,
        check_disk,
        study_time_line,
    )

    config = FailureStudyConfig(getattr(args, "class"), args.des_worst, args.robust_tolerance)
    strategies = args.strategies or default_strategies(config.failure_class)
    check_strategies(strategies, config.failure_class)
    options = SolverOptions(time_limit_s=args.time_limit, threads=args.threads, seed=args.seed)
    sim = SimConfig(traffic=TrafficConfig(dispatch=args.dispatch, multipath=args.multipath))
    cluster = cluster_from_args(args)
    assert cluster is not None
    model, fit = _fit(args, cluster.gpu_server)
    out = args.out or Path("runs") / f"failures-{config.failure_class}"

    check_disk(4 * PARQUET_FILE_MIN_BYTES, out, "study failures", OUT_DISK_FIX)  # 4 tables
    feedback = Feedback.from_args(args)
    progress = feedback.note
    if feedback.notes:  # the time line; with -q nothing is counted for it
        events = (des_replay_hop_events(fit.replay, build_route_table(cluster),
                                        sim.microbatch_tokens, sim.traffic)
                  if config.des_worst else None)
        costs = failure_study_work(strategies,
                                   len(single_failures(cluster, config.failure_class)),
                                   config.des_worst, fit.replay.num_tokens,
                                   model.num_moe_layers, options.time_limit_s, events)
        line = study_time_line(COMMAND, "strategy", costs)
        if line:
            progress(line)
    t0 = time.perf_counter()
    study = run_failure_study(cluster, model, fit, strategies, config, options, sim, progress)
    summary = summarize(study, config)
    runtime = time.perf_counter() - t0
    label = cluster_label(args) or cluster.name
    meta = {"command": f"moe-netsim {COMMAND}", "cluster": label, "model": model.name,
            "fit": fit.description, "strategies": strategies, "config": asdict(config),
            "solver_options": asdict(options), "traffic": asdict(sim.traffic),
            "runtime_s": runtime}
    with run_directory(out, args.overwrite) as work:
        write_parquet(work / "rows.parquet", study.rows)
        write_parquet(work / "summary.parquet", summary)
        write_parquet(work / "des.parquet", study.des)
        write_parquet(work / "skipped.parquet", study.skipped)
        write_json(work / "meta.json", meta)
        if not args.no_report:
            write_report(work, study, summary, config, label, fit.description)
    shown = [c for c in ("strategy", "policy", "robust", "healthy_bound_ms", "mean_bound_ms",
                         "worst_bound_ms", "worst_scenario", "worst_hops_per_token",
                         "worst_gpu_balance_max_over_mean", "worst_latency_p99_ms")
             if c in summary.columns]
    print(summary[shown].to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    robust = summary[(summary["policy"] == "keep") & summary["robust"]]["strategy"].tolist()
    print(f"\nrobust (keep, worst bound within {100 * config.robust_tolerance:g} %):"
          f" {', '.join(robust) or 'none'}")
    note = (scheme_note(sim.traffic.dispatch, cluster.has_gpu_nics, label)
            if config.des_worst else None)
    if note:
        print(note, file=sys.stderr)
    print(f"{len(study.skipped)} failures cut GPUs off and were not replayed")
    print(f"wrote {out}/ in {runtime:.1f} s")
    return 0
