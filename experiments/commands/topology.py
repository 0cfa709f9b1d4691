"""``moe-netsim topology``: list families, build a cluster file, inspect it, draw it.

* ``topology list``: the families and the named presets.
* ``topology show [NAME]``: a family's parameters with defaults and help, or a preset's numbers
  and sources (no name: every preset).
* ``topology build FAMILY|PRESET --param k=v ... --out CLUSTER.json|.graphml [--overwrite]``
* ``topology import --matrix FILE [--matrix-kind cost|bandwidth --symmetrize HOW] --out C``:
  a cluster from a measured rank-to-rank cost or bandwidth matrix.
* ``topology info CLUSTER [--elements]``: validate a file and print its size and distances.
* ``topology whatif CLUSTER --fail KIND:NAME --degrade link:A~B=F --out NEW.json``: failures.
* ``topology draw CLUSTER --out PNG [--link-load links.parquet --strategy S --metric bytes]``
* ``topology bench``: time building and routing the R1-sized (256-GPU) cluster of each family.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.commands.cluster_args import add_cluster_source, source_cluster
from experiments.outputs import CLUSTER_FILE, FIGURE_PNG, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from simulator.cluster.failures import (
    ELEMENT_KINDS,
    LINK_SEPARATOR,
    apply_whatif,
    link_name,
    parse_whatif,
)
from traces.infra.errors import InputError

if TYPE_CHECKING:
    from simulator.cluster.families import TopologyFamily
    from simulator.cluster.topology import ClusterSpec


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `topology` subcommand and its actions."""
    p = sub.add_parser(
        "topology",
        help="Build, inspect and draw cluster topologies.",
        description="Build cluster files from the topology families, inspect and draw them.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("list", help="List the topology families and presets.")
    a.set_defaults(func=run_list)
    a = acts.add_parser(
        "show", help="Show a family's parameters or a preset's numbers and sources.",
        description="A family's parameters with defaults and help, or a named preset's"
        " published numbers and their sources; without a name, every preset.",
    )
    a.add_argument("family", nargs="?", default=None,
                   help="Family or preset name (see `topology list`); omit for all presets.")
    a.set_defaults(func=run_show)
    _register_build(acts)
    _register_import(acts)
    a = acts.add_parser("info", help="Validate a cluster file and summarise it.")
    add_cluster_source(a, "Cluster file (.json or .graphml).")
    a.add_argument("--elements", action="store_true",
                   help="Also list every server, switch and link by the name `topology whatif`"
                        " takes.")
    add_progress_arguments(a)
    a.set_defaults(func=run_info)
    register_whatif(acts)
    _register_draw(acts)
    a = acts.add_parser(
        "bench",
        help="Time building and routing the 256-GPU cluster of each family.",
        description="Build the DeepSeek-R1-sized cluster (256 GPUs, 32 servers of 8) of each"
        " family, then time the route table, the analytic counter's spray split and the ECMP"
        " link shares of every server pair.",
    )
    add_progress_arguments(a)
    a.set_defaults(func=run_bench)


def _register_build(acts: argparse._SubParsersAction) -> None:
    a = acts.add_parser(
        "build",
        help="Build a cluster and write it as JSON or GraphML.",
        description="Build FAMILY with parameters (`topology show FAMILY` lists them), or a"
        " named preset (no parameters), and write it; the file's suffix (.json, .graphml)"
        " picks the format.",
    )
    a.add_argument("family", help="Family or preset name (see `topology list`).")
    a.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="A parameter, e.g. --param k=8 --param num_servers=32 (repeatable).",
    )
    add_cluster_output(a, "Cluster file (.json or .graphml).")
    add_progress_arguments(a)
    a.set_defaults(func=run_build)


def _register_import(acts: argparse._SubParsersAction) -> None:
    a = acts.add_parser(
        "import",
        help="Build a cluster from a measured rank-to-rank cost or bandwidth matrix.",
        description="Read a measured matrix (JSON: SGLang's {\"rank_cost_matrix\": [[...]]},"
        " optionally rank_bandwidth_bytes_per_s, rank_latency_s, rank_server; or CSV of one"
        " matrix) and write a cluster: rank r is GPU r, every rank pair one link weighted by"
        " its cost (or fastest rate / its rate) at its measured rate.",
    )
    a.add_argument("--matrix", type=Path, required=True,
                   help="Matrix file (.json or .csv); rows and columns in EP rank order.")
    a.add_argument("--matrix-kind", choices=("cost", "bandwidth"), default="cost",
                   help="What a .csv matrix holds (default: cost); JSON names its matrices.")
    a.add_argument("--symmetrize", choices=("mean", "min", "max"), default=None,
                   help="Combine the two directions of an asymmetric matrix (default: refuse"
                   " asymmetric matrices).")
    a.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="A link default for what the matrix does not give: nic_bandwidth_bytes_per_s"
        " (rate of every pair without a bandwidth matrix), network_latency_s, nvlink_latency_s.",
    )
    add_output_argument(a, "--out", CLUSTER_FILE, required=True,
                        help="Cluster file (.json or .graphml).")
    a.add_argument("--overwrite", action="store_true",
                   help="Replace a cluster file moe-netsim wrote.")
    add_progress_arguments(a)
    a.set_defaults(func=run_import)


def _register_draw(acts: argparse._SubParsersAction) -> None:
    a = acts.add_parser(
        "draw",
        help="Draw a cluster as PNG, optionally with per-link load.",
        description="Draw the cluster bottom-up (GPUs, servers, switch tiers), groups shaded;"
        " with --link-load, links are coloured and sized by their load (busier direction).",
    )
    add_cluster_source(a, "Cluster file (.json or .graphml).")
    add_output_argument(a, "--out", FIGURE_PNG, required=True, help="PNG file to write.")
    a.add_argument("--overwrite", action="store_true",
                   help="Replace a PNG that moe-netsim drew.")
    a.add_argument(
        "--link-load", type=Path, default=None,
        help="links.parquet of a run on this cluster (columns link, src, dst and the metric).",
    )
    a.add_argument("--strategy", default=None, help="Which strategy's rows, if several.")
    a.add_argument(
        "--metric", default="bytes", help="Column of the link-load table to draw (default bytes)."
    )
    a.add_argument("--title", default=None, help="Figure title.")
    add_progress_arguments(a)
    a.set_defaults(func=run_draw)


def _family(name: str) -> TopologyFamily:
    from simulator.cluster.families import BUILDERS
    from simulator.cluster.presets import PRESETS

    if name not in BUILDERS:
        raise InputError(
            f"unknown topology family or preset {name!r}; families: {sorted(BUILDERS)};"
            f" presets: {sorted(PRESETS)}"
        )
    return BUILDERS[name]


def parse_params(items: list[str]) -> dict[str, str]:
    """``["k=4", "sparsity=0.25"]`` -> ``{"k": "4", "sparsity": "0.25"}`` (typed by the family)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--param {item!r}: expected NAME=VALUE")
        if name in out:
            raise InputError(f"--param {name} given twice")
        out[name] = value
    return out


def run_list(args: argparse.Namespace) -> int:
    from simulator.cluster.families import BUILDERS
    from simulator.cluster.presets import PRESETS

    print("families:")
    for name, fam in BUILDERS.items():
        print(f"  {name:22s} {fam.summary}")
    print("presets (`topology show NAME` for numbers and sources):")
    for name, preset in PRESETS.items():
        print(f"  {name:22s} {preset.summary}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from simulator.cluster.presets import PRESETS

    if args.family is None or args.family in PRESETS:
        names = list(PRESETS) if args.family is None else [args.family]
        for name in names:
            print("\n".join(PRESETS[name].describe()))
        return 0
    fam = _family(args.family)
    print(f"{fam.name}: {fam.summary}")
    for p in fam.params:
        default = "(derived)" if p.default is None else f"{p.default:g}" if isinstance(
            p.default, float) else str(p.default)
        rng = f" [{p.range.text()}]" if p.range else ""
        print(f"  {p.name:30s} {p.type.__name__:6s} {default:>12s}  {p.help}{rng}")
    return 0


def describe(cluster: ClusterSpec) -> str:
    """One paragraph: sizes and the distribution of GPU-to-GPU distances."""
    import numpy as np

    from simulator.cluster.paths import gpu_distance_matrix

    switches = sum(n.kind == "switch" for n in cluster.nodes)
    d = gpu_distance_matrix(cluster)
    off = d[~np.eye(len(d), dtype=bool)]
    values, counts = np.unique(off, return_counts=True)
    hist = ", ".join(f"{v:g}: {c}" for v, c in zip(values, counts, strict=True))
    return (
        f"{cluster.name}: {cluster.description}\n"
        f"  {cluster.num_gpus} GPUs, {cluster.num_servers} servers, {switches} switches,"
        f" {len(cluster.links)} links\n"
        f"  GPU-pair distances (weighted hops: ordered pairs): {hist}"
    )


def run_build(args: argparse.Namespace) -> int:
    from simulator.cluster.io import save_cluster
    from simulator.cluster.presets import PRESETS

    params: dict[str, Any] = dict(parse_params(args.param))
    if args.family in PRESETS:
        if params:
            raise InputError(
                f"--param: preset {args.family} has fixed numbers; build its family"
                f" {PRESETS[args.family].family} to change them"
            )
        build = PRESETS[args.family].build
    else:
        family = _family(args.family)

        def build() -> Any:
            return family(**params)
    feedback = Feedback.from_args(args)  # no count to show: the seconds each step has taken
    with feedback.ticking(None, f"topology build {args.family}: building"):
        cluster = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with feedback.ticking(None, f"topology build: writing {args.out.name}"):
        save_cluster(cluster, args.out)
    print(describe(cluster))
    print(f"wrote {args.out}")
    return 0


MATRIX_LINK_PARAMS = ("nic_bandwidth_bytes_per_s", "network_latency_s", "nvlink_latency_s")


def run_import(args: argparse.Namespace) -> int:
    import sys

    from simulator.cluster.builders import LinkDefaults
    from simulator.cluster.io import save_cluster
    from simulator.cluster.matrix import (
        cluster_from_matrices,
        describe_relays,
        read_matrices,
        relayed_pairs,
    )

    params = parse_params(args.param)
    unknown = sorted(set(params) - set(MATRIX_LINK_PARAMS))
    if unknown:
        raise InputError(f"--param {unknown[0]}: not used by a matrix import; use one of"
                         f" {', '.join(MATRIX_LINK_PARAMS)}")
    try:
        values: dict[str, Any] = {k: float(v) for k, v in params.items()}
        defaults = LinkDefaults(**values)
    except ValueError as exc:
        raise InputError(f"--param: expected a number ({exc})") from None
    except InputError as exc:
        raise InputError(f"--param: {exc}") from None
    # no count to show: the seconds each step has taken (512 ranks: about 25 s CPU)
    feedback = Feedback.from_args(args)
    with feedback.ticking(None, f"topology import: reading {args.matrix.name}"):
        m = read_matrices(args.matrix, args.symmetrize, args.matrix_kind)
    with feedback.ticking(None, f"topology import: {m.num_ranks:,} ranks, one link per pair"):
        cluster = cluster_from_matrices(m, defaults)
        warning = describe_relays(relayed_pairs(cluster, m, defaults), m.num_ranks)
    if warning:
        print(f"{args.matrix}: {warning}", file=sys.stderr)  # a warning, even with -q
    with feedback.ticking(None, f"topology import: writing {args.out.name}"):
        save_cluster(cluster, args.out)
    print(describe(cluster))
    print(f"wrote {args.out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    cluster, _ = source_cluster(args)
    print(describe(cluster))
    if args.elements:
        print("\n".join(element_lines(cluster)))
    return 0


def run_draw(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt
    import pandas as pd

    from experiments.outputs import save_figure
    from experiments.plot_topology import link_load_per_link, plot_topology

    cluster, _ = source_cluster(args)
    if args.out.suffix.lower() != ".png":
        raise InputError(f"--out {args.out}: the drawing is written as PNG; use a .png name")
    load = None
    if args.link_load is not None:
        if not args.link_load.exists():
            raise InputError(f"{args.link_load}: link-load file not found")
        try:
            frame = pd.read_parquet(args.link_load)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise InputError(f"{args.link_load}: not a readable Parquet file ({exc})") from None
        try:
            load = link_load_per_link(cluster, frame, args.metric, args.strategy)
        except InputError as exc:
            raise InputError(f"{args.link_load}: {exc}") from None
    elif args.strategy is not None:
        raise InputError("--strategy needs --link-load")
    feedback = Feedback.from_args(args)  # no count to show: the seconds each step has taken
    with feedback.ticking(None, f"topology draw: drawing {len(cluster.gpu_server):,} GPUs"):
        fig = plot_topology(cluster, load, args.metric, args.title)
    try:
        with feedback.ticking(None, f"topology draw: writing {args.out.name}"):
            save_figure(args.out, fig)
    finally:
        plt.close(fig)
    print(f"wrote {args.out}")
    return 0


def register_whatif(acts: argparse._SubParsersAction) -> None:
    """Add ``topology whatif``."""
    a = acts.add_parser(
        "whatif",
        help="Write a cluster file with links, switches or servers failed or links degraded.",
        description="Fail elements (a link, a switch, a server with its GPUs) and degrade links,"
        " and write the resulting cluster. Surviving nodes keep their names and order, so"
        " layouts stay valid where no server failed (a failed server's GPUs disappear: re-place,"
        " or repair a layout with `place --repair`). A switch left without links is removed"
        " too. A failure that cuts GPUs off is refused, naming them. `topology info CLUSTER"
        " --elements` lists the names.",
    )
    add_cluster_source(a, "Cluster file (.json or .graphml).")
    a.add_argument(
        "--fail", action="append", default=[], metavar="KIND:NAME",
        help=f"A failed element (repeatable): link:A{LINK_SEPARATOR}B (either order),"
        " switch:NAME or server:NAME.",
    )
    a.add_argument(
        "--degrade", action="append", default=[], metavar=f"link:A{LINK_SEPARATOR}B=FACTOR",
        help="A link that keeps FACTOR of its bandwidth, 0 < FACTOR <= 1 (repeatable).",
    )
    add_cluster_output(a, "New cluster file (.json or .graphml).")
    add_progress_arguments(a)
    a.set_defaults(func=run_whatif)


def add_cluster_output(p: argparse.ArgumentParser, help: str) -> None:
    """``--out CLUSTER`` and ``--overwrite`` (a cluster file moe-netsim wrote)."""
    add_output_argument(p, "--out", CLUSTER_FILE, required=True, help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a cluster file moe-netsim wrote.")


def run_whatif(args: argparse.Namespace) -> int:
    from simulator.cluster.io import save_cluster

    cluster, label = source_cluster(args)
    whatif = parse_whatif(args.fail, args.degrade)
    result = apply_whatif(cluster, whatif, where=label)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_cluster(result.cluster, args.out)
    print(describe(result.cluster))
    for note in result.notes:
        print(f"  note: {note}")
    if result.removed_gpus:
        print(f"  {len(result.removed_gpus)} GPUs removed with their servers; GPU indices of the"
              " survivors shift down: re-place, or repair a layout with `moe-netsim place"
              f" --repair LAYOUT --healthy {args.cluster or 'ORIGINAL.json'}`")
    else:
        print("  same GPUs in the same order: layouts of the original cluster stay valid")
    print(f"wrote {args.out}")
    return 0


def element_lines(cluster: ClusterSpec) -> list[str]:
    """Every element a what-if can name, one per line (``topology info --elements``); a GPU's
    link to its server is left out (failing it only cuts that GPU off)."""
    gpus = set(cluster.gpus)
    out = [f"  {kind}:{n.name}" for kind in ELEMENT_KINDS[1:] for n in cluster.nodes
           if n.kind == kind]
    out += [f"  link:{link_name(lk)}  {lk.tier or '-'} {lk.bandwidth_bytes_per_s:g} B/s"
            for lk in cluster.links if not {lk.a, lk.b} & gpus]
    out.append(f"  ({len(gpus)} GPU-to-server links not listed: failing one cuts its GPU off)")
    return out


# DeepSeek-R1-sized clusters: 256 GPUs in 32 servers of 8
BENCH_CASES: list[tuple[str, dict[str, Any]]] = [
    ("fat-tree", {"k": 10, "num_servers": 32}),
    ("fat-tree-sparse", {"k": 10, "num_servers": 32}),
    ("dragonfly", {"num_groups": 4}),
    ("dragonfly-sparse", {"num_groups": 4}),
    ("leaf-spine", {"num_servers": 32, "servers_per_leaf": 8}),
    ("rail-optimized", {"num_servers": 32, "servers_per_group": 16}),
]


def run_bench(args: argparse.Namespace) -> int:
    from simulator.cluster.families import BUILDERS
    from simulator.cluster.link_loads import SprayPropagator
    from simulator.cluster.paths import build_route_table

    print(f"{'family':18s} {'GPUs':>5s} {'links':>6s} {'build_s':>8s} {'routes_s':>9s}"
          f" {'spray_s':>8s} {'ecmp_shares_s':>14s}")
    cases = Feedback.from_args(args).iterate(BENCH_CASES, len(BENCH_CASES), "topology bench",
                                             "family")
    for family, params in cases:
        t0 = time.perf_counter()
        cluster = BUILDERS[family](**params)
        t1 = time.perf_counter()
        routes = build_route_table(cluster)
        t2 = time.perf_counter()
        SprayPropagator.build(routes.net.core)  # the analytic counter's spray split
        t3 = time.perf_counter()
        n = cluster.num_servers
        for i in range(n):
            for j in range(n):
                routes.middle_link_shares(i, j)
        t4 = time.perf_counter()
        print(f"{family:18s} {cluster.num_gpus:5d} {len(cluster.links):6d} {t1 - t0:8.3f}"
              f" {t2 - t1:9.3f} {t3 - t2:13.3f} {t4 - t3:14.3f}")
    return 0
