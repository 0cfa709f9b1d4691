"""``moe-netsim topology whatif``: a cluster file after failures and degradations."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.outputs import CLUSTER_FILE, add_output_argument
from simulator.cluster.failures import (
    ELEMENT_KINDS,
    LINK_SEPARATOR,
    apply_whatif,
    link_name,
    parse_whatif,
)
from simulator.cluster.io import load_cluster, save_cluster
from simulator.cluster.topology import ClusterSpec


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
    a.add_argument("cluster", type=Path, help="Cluster file (.json or .graphml).")
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
    a.set_defaults(func=run_whatif)


def add_cluster_output(p: argparse.ArgumentParser, help: str) -> None:
    """``--out CLUSTER`` and ``--overwrite`` (a cluster file moe-netsim wrote)."""
    add_output_argument(p, "--out", CLUSTER_FILE, required=True, help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a cluster file moe-netsim wrote.")


def run_whatif(args: argparse.Namespace) -> int:
    from experiments.commands.topology import describe

    cluster = load_cluster(args.cluster)
    whatif = parse_whatif(args.fail, args.degrade)
    result = apply_whatif(cluster, whatif, where=str(args.cluster))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_cluster(result.cluster, args.out)
    print(describe(result.cluster))
    for note in result.notes:
        print(f"  note: {note}")
    if result.removed_gpus:
        print(f"  {len(result.removed_gpus)} GPUs removed with their servers; GPU indices of the"
              " survivors shift down: re-place, or repair a layout with `moe-netsim place"
              f" --repair LAYOUT --healthy {args.cluster}`")
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
