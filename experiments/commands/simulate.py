"""``moe-netsim simulate``: replay a trace file through a cluster file for a layout file.

``--mode des`` runs the SimPy replay, ``--mode flow`` the flow-level replay (same outputs, no
per-message events), ``--mode analytic`` the vectorised counter (bytes per link, hops per
token, bandwidth lower bound per phase).  All stream the trace.  Every input is
checked before the run starts; results go to a run directory that appears only when complete.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.commands.cluster_args import (
    add_cluster_arguments,
    cluster_from_args,
    cluster_label,
)
from experiments.options import add_number, add_option
from experiments.outputs import add_output_argument, run_directory_kind
from experiments.progress import Feedback, add_progress_arguments
from simulator.config import SimConfig
from simulator.modes import REPLAY_MODES, SIM_MODES
from simulator.traffic_config import REPLACED_OPTIONS, TrafficConfig
from traces.infra.errors import InputError
from traces.infra.options import Range
from traces.origin_models import OriginOptions, resolve_model

if TYPE_CHECKING:
    import numpy as np

    from simulator.cluster.paths import RouteTable
    from simulator.cluster.topology import ClusterSpec
    from simulator.engine import SimResult
    from traces.model import ModelSpec
    from traces.origin_models import OriginModel
    from traces.trace import RoutingTrace


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `simulate` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="Replay a trace through a cluster for one layout (SimPy, flow-level or analytic).",
        description=(
            "Replay a routing trace (native Parquet) through a cluster (JSON) for an expert"
            " layout (Parquet or CSV: layer, expert[, replica], gpu). --mode des runs the"
            " discrete-event model and writes links, utilisation over time, layers, phases,"
            " tokens, gpus and summary Parquet files; --mode flow writes the same files from"
            " the flow-level model (messages as max-min fair flows); --mode analytic counts"
            " bytes per link, hops per token and the bandwidth lower bound of every phase."
        ),
    )
    # the replay modes are SimConfig.mode; the command also offers the analytic count
    mode = p.add_argument("--mode", choices=list(SIM_MODES), default=SimConfig().mode,
                          help="; ".join(f"{k}: {v}" for k, v in SIM_MODES.items()) + ".")
    mode.option_field = (SimConfig, "mode")  # type: ignore[attr-defined]
    p.add_argument("--trace", type=Path, required=True, help="Trace file (native Parquet).")
    add_cluster_arguments(p, required=True, help_file="Cluster file (.json or .graphml).")
    p.add_argument(
        "--layout", type=Path, required=True,
        help="Layout file (.parquet or .csv); 'layer' holds the model's layer indices.",
    )
    add_option(p, OriginOptions, "origins", "--origins")
    add_output_argument(p, "--out", run_directory_kind("simulate"), required=True,
                        help="Run directory to create.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a run directory an earlier `simulate` wrote.")
    add_option(p, SimConfig, "microbatch_tokens", "--microbatch-tokens",
               help="Micro-batches of N tokens; default: one per recorded step.")
    add_option(p, SimConfig, "inflight_microbatches", "--inflight")
    add_option(p, SimConfig, "chunk_bytes", "--chunk-bytes")
    add_option(p, TrafficConfig, "dispatch_bytes_per_element", "--dispatch-bytes-per-element")
    add_option(p, TrafficConfig, "combine_bytes_per_element", "--combine-bytes-per-element")
    add_option(p, TrafficConfig, "hidden_size", "--hidden-size")
    add_option(p, TrafficConfig, "dispatch", "--dispatch")
    add_option(p, TrafficConfig, "multipath", "--multipath")
    add_option(p, TrafficConfig, "flows_per_pair", "--flows-per-pair")
    for old in REPLACED_OPTIONS:  # replaced flags: a one-line error naming the new one
        p.add_argument("--" + old.replace("_", "-"), action="store_true", help=argparse.SUPPRESS)
    add_option(p, SimConfig, "gpu_flops_per_s", "--gpu-flops-per-s")
    add_option(p, SimConfig, "expert_time_per_route_s", "--expert-time-per-route-s")
    add_option(p, SimConfig, "utilisation_window_s", "--window-s")
    add_option(p, SimConfig, "flow_tolerance", "--flow-tolerance")
    add_number(p, "--read-chunk-tokens", int, 65_536,
               "Tokens read from the trace file at a time (memory bound).", "tokens",
               Range(1, 2**30))
    p.add_argument("--no-report", action="store_true", help="Skip the figures and report.html.")
    where = p.add_mutually_exclusive_group()
    add_number(where, "--workers", int, 1, "Split an analytic replay (or a flow replay with"
               " --inflight 1) by micro-batch over a local Dask cluster of N worker processes"
               " (loopback only); 1: run in this process.",
               "processes", Range(1, 1024))
    where.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", default=None, type=scheduler_address,
        help="Split an analytic replay (or a flow replay with --inflight 1) by micro-batch over"
        " this existing Dask cluster.")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def load_inputs(
    trace: Path, cluster: ClusterSpec, topology: str, layout: Path
) -> tuple[ModelSpec, RouteTable, np.ndarray]:
    """Read and cross-check the three inputs; raise :class:`InputError` before any run."""
    from placement.layout_io import load_layout
    from simulator.cluster.paths import build_route_table
    from simulator.engine import validate_links
    from simulator.traffic import validate_layout
    from traces.io import read_trace_meta

    meta, _ = read_trace_meta(trace)
    model = meta.model
    routes = build_route_table(cluster)
    validate_links(routes)
    try:
        lay = load_layout(
            layout, model.num_moe_layers, model.num_routed_experts, cluster.num_gpus,
            model.moe_layer_indices,
        )
    except InputError as exc:
        raise InputError(
            f"{exc} (the trace {trace} is {model.name!r}: MoE layers"
            f" {model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]},"
            f" {model.num_routed_experts} routed experts; the cluster {topology} has GPUs"
            f" 0..{cluster.num_gpus - 1}; the layout must place every expert of every layer"
            " on one of those GPUs)"
        ) from None
    expert_gpus = lay.expert_gpus
    validate_layout(expert_gpus, model, cluster.num_gpus)
    return model, routes, expert_gpus


def _check_sizes(args: argparse.Namespace, model: ModelSpec, routes: RouteTable,
                 traffic: TrafficConfig, tokens: int) -> None:
    """Refuse, before the replay, byte counts an int64 cannot hold, a DES whose per-token
    records cannot fit in memory and outputs that cannot fit the disk of --out; say how long
    a long run may take (traces/infra/limits.py)."""
    from traces.infra import limits

    traffic.check_byte_counts(
        model, tokens, routes, "simulate", "replay fewer tokens (split the trace) or lower"
        " --hidden-size or --dispatch-/--combine-bytes-per-element",
    )
    if args.mode == "des":  # a record per token and layer (latency), one per link and window
        per_token = 8 * (4 + model.num_moe_layers)
        limits.check_memory(tokens * per_token, f"simulate --mode des of {tokens:,} tokens",
                            "replay fewer tokens, or count bytes with --mode analytic")
    records = args.mode in REPLAY_MODES  # per-token records and four more tables
    disk = ((7 if records else 3) * limits.PARQUET_FILE_MIN_BYTES + 2 * len(routes.cluster.links)
            + (tokens * limits.TOKEN_RECORD_MIN_BYTES if records else 0))
    limits.check_disk(disk, args.out, f"simulate --mode {args.mode} of {tokens:,} tokens",
                      limits.OUT_DISK_FIX)
    if args.mode != "des":  # the DES's line counts its events (_des_time_line)
        line = limits.run_time_line("simulate", tokens, model.num_moe_layers, args.mode)
        if line:
            Feedback.from_args(args).note(line)


def _des_time_line(args: argparse.Namespace, stream: Iterator[RoutingTrace], tokens: int,
                   routes: RouteTable, expert_gpus: np.ndarray,
                   traffic: TrafficConfig) -> Iterator[RoutingTrace]:
    """Say how long a DES replay may take, from its first micro-batch's hop events
    (simulator/des_cost.py) scaled to the trace's tokens; the stream, unchanged."""
    first = next(stream, None)
    if first is None:
        return stream
    from simulator.des_cost import microbatch_work
    from traces.infra import limits

    work = microbatch_work(first, routes, expert_gpus, traffic)
    events = work.hop_events * tokens / first.num_tokens
    line = limits.des_time_line("simulate", events)
    if line:
        Feedback.from_args(args).note(line)
    return itertools.chain([first], stream)


def scheduler_address(text: str) -> str:
    from experiments.dask_cluster import check_scheduler_address

    try:
        return check_scheduler_address(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {str(exc).split(': ', 1)[1]}") from None


def _split_client(args: argparse.Namespace, config: SimConfig, stack: ExitStack) -> Any:
    """The Dask client a split replay runs on (None: count in this process)."""
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.scheduler is None and args.workers == 1:
        return None
    flag = "--scheduler" if args.scheduler else "--workers"
    if args.mode == "des":
        raise InputError(f"{flag} splits analytic and flow replays only; --mode des runs in"
                         " this process (drop the flag or use --mode analytic or flow)")
    from experiments.split_replay import flow_split_problem

    problem = flow_split_problem(config) if args.mode == "flow" else None
    if problem:
        raise InputError(f"{flag} with --mode flow: {problem}")
    from experiments.dask_cluster import connect_scheduler, local_client

    if args.scheduler is not None:
        client = connect_scheduler(args.scheduler)
        stack.callback(client.close)
        return client
    return stack.enter_context(local_client(args.workers))


def run(args: argparse.Namespace) -> int:
    from experiments.layout_record import foreign_layout_warning
    from experiments.outputs import run_directory, write_json, write_parquet
    from simulator.cluster.multipath import endpoints_of
    from simulator.dispatch import check_scheme, scheme_note
    from simulator.microbatches import microbatches
    from simulator.summaries import summary_frame
    from traces.io import iter_trace, read_trace_meta
    from traces.origins import OriginAssigner, with_origins

    config = _sim_config(args)
    traffic = config.traffic
    origins = resolve_model(args.origins)
    cluster = cluster_from_args(args)
    assert cluster is not None  # the argument group is required
    model, routes, expert_gpus = load_inputs(args.trace, cluster, cluster_label(args) or "",
                                             args.layout)
    _check_sizes(args, model, routes, traffic, read_trace_meta(args.trace)[1])
    try:
        check_scheme(traffic.dispatch, endpoints_of(routes), routes.cluster.name)
    except InputError as exc:
        raise InputError(f"{cluster_label(args) or routes.cluster.name}: {exc}") from None
    assigner = OriginAssigner(origins, routes.cluster.gpu_server)
    feedback = Feedback.from_args(args)
    total_tokens = read_trace_meta(args.trace)[1]
    stream = microbatches(with_origins(iter_trace(args.trace, args.read_chunk_tokens), assigner),
                          args.microbatch_tokens)
    if args.mode == "des":
        stream = _des_time_line(args, stream, total_tokens, routes, expert_gpus, traffic)
    meta = _run_meta(args, origins, model, routes, config)
    with ExitStack() as stack:
        client = _split_client(args, config, stack)  # before the run directory: nothing written
        if client is not None:  # the bar counts counted tokens, not tokens read
            meta["execution"] = args.scheduler or f"local dask x{args.workers}"
        work = stack.enter_context(run_directory(args.out, args.overwrite))
        t0 = time.perf_counter()
        if client is not None:
            bar = stack.enter_context(feedback.bar(total_tokens, f"simulate ({args.mode},"
                                                   " split)", "tok", unit_scale=True))
            frames = _split(args.mode, client, stream, routes, expert_gpus, config, bar)
        else:
            blocks = feedback.tokens(stream, total_tokens, f"simulate ({args.mode})")
            frames = _replay(args.mode, blocks, routes, expert_gpus, config)
        summary = frames.pop("summary")
        for name, frame in frames.items():
            write_parquet(work / f"{name}.parquet", frame)
        runtime = time.perf_counter() - t0
        write_parquet(work / "summary.parquet", summary_frame(summary))
        write_json(work / "meta.json", {**meta, "runtime_s": runtime, "status": "complete"})
        if not args.no_report:
            from experiments.report_runs import write_simulate_report

            write_simulate_report(work)
    _print_summary(summary)
    label = cluster_label(args) or routes.cluster.name
    for warning in (foreign_layout_warning(args.layout, routes.cluster, label),
                    assigner.warning(),
                    scheme_note(traffic.dispatch, routes.cluster.has_gpu_nics, label)):
        if warning:
            print(warning, file=sys.stderr)
    tail = "" if args.no_report else f" (open {args.out}/report.html)"
    print(f"wrote {args.out}/ in {runtime:.1f} s{tail}")
    return 0


def _sim_config(args: argparse.Namespace) -> SimConfig:
    """The replay's configuration from the flags (a replaced flag names its successor)."""
    for old, (new, value) in REPLACED_OPTIONS.items():
        if getattr(args, old):
            flag = "--" + old.replace("_", "-")
            raise InputError(f"{flag} was replaced: use --{new.replace('_', '-')} {value}")
    traffic = TrafficConfig(
        dispatch_bytes_per_element=args.dispatch_bytes_per_element,
        combine_bytes_per_element=args.combine_bytes_per_element,
        hidden_size=args.hidden_size,
        dispatch=args.dispatch,
        multipath=args.multipath,
        flows_per_pair=args.flows_per_pair,
    )
    config = SimConfig(
        traffic=traffic,
        chunk_bytes=args.chunk_bytes,
        inflight_microbatches=args.inflight,
        gpu_flops_per_s=args.gpu_flops_per_s,
        expert_time_per_route_s=args.expert_time_per_route_s,
        utilisation_window_s=args.window_s,
    )
    if args.mode in REPLAY_MODES:
        config = replace(config, mode=args.mode, flow_tolerance=args.flow_tolerance)
    return config


def _run_meta(args: argparse.Namespace, origins: OriginModel | None, model: ModelSpec,
              routes: RouteTable, config: SimConfig) -> dict[str, Any]:
    """The run directory's meta.json, before the run's time and status."""
    from experiments.versions import versions

    return {
        "command": "moe-netsim simulate",
        "mode": args.mode,
        "trace": str(args.trace),
        "topology": cluster_label(args),
        "layout": str(args.layout),
        "origins": origins.text if origins is not None else "recorded, else dp",
        "model": model.name,
        "cluster": routes.cluster.description or routes.cluster.name,
        "microbatches": (
            f"{args.microbatch_tokens} tokens" if args.microbatch_tokens else "trace steps"
        ),
        "sim_config": config.to_dict(),
        "versions": versions(),
    }


def _split(mode: str, client: Any, blocks: Iterable[RoutingTrace], routes: RouteTable,
           expert_gpus: np.ndarray, config: SimConfig, bar: Any) -> dict[str, Any]:
    """An analytic count or a flow replay split by micro-batch over a Dask cluster: summary
    and tables."""
    from experiments.split_replay import count_traffic_split, replay_flow_split

    def advance(_block: Any, part: Any) -> None:
        bar.update(part.tokens)

    if mode == "analytic":
        res = count_traffic_split(client, blocks, routes, expert_gpus, config.traffic, advance)
        return {"summary": res.summary, "links": res.links, "lower_bounds": res.lower_bound_s}
    return _sim_tables(replay_flow_split(client, blocks, routes, expert_gpus, config, advance))


def _replay(mode: str, blocks: Iterable[RoutingTrace], routes: RouteTable,
            expert_gpus: np.ndarray, config: SimConfig) -> dict[str, Any]:
    """The analytic count or a replay (des, flow) in this process: summary and the tables
    of the run directory, by file name."""
    if mode == "analytic":
        from simulator.analytic import count_traffic

        res = count_traffic(blocks, routes, expert_gpus, config.traffic)
        return {"summary": res.summary, "links": res.links, "lower_bounds": res.lower_bound_s}
    from simulator.replay import replay

    return _sim_tables(replay(blocks, routes, expert_gpus, config))


def _sim_tables(sim: SimResult) -> dict[str, Any]:
    """A replay's summary and the tables of its run directory, by file name."""
    return {"summary": sim.summary, "links": sim.links, "utilisation": sim.utilisation,
            "layers": sim.layers, "phases": sim.phases, "tokens": sim.tokens, "gpus": sim.gpus}


def _print_summary(summary: dict[str, Any]) -> None:
    keys = [k for k in ("tokens", "hops_per_token", "remote_copies_per_token_layer",
                        "remote_routes_per_token_layer", "network_bytes_dedup",
                        "network_bytes_no_dedup", "network_bytes", "bytes_intra_server",
                        "bytes_leaf", "bytes_spine", "makespan_s", "latency_p50_s",
                        "latency_p99_s", "dispatch_lower_bound_s", "combine_lower_bound_s")
            if k in summary]
    for k in keys:
        print(f"{k:>30}: {summary[k]:.6g}")
    print(f"{'dispatch, multipath':>30}: {summary['dispatch']}, {summary['multipath']}")
    print(f"{'shared experts':>30}: {summary['shared_experts']}")
