"""The cluster arguments every command that takes a cluster shares: a file or a shorthand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.options import add_number
from traces.infra.options import Range

if TYPE_CHECKING:
    from simulator.cluster.topology import ClusterSpec


def add_cluster_arguments(p: argparse.ArgumentParser, required: bool, help_file: str) -> None:
    """``--topology FILE``, ``--preset NAME`` or ``--fat-tree K SERVERS`` (at most one)."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--topology", type=Path, help=help_file)
    add_number(group, "--fat-tree", int, None, "Instead of --topology: build a k-ary fat tree"
               " with this many servers of 8 GPUs.", "", Range(1, 2**20), nargs=2,
               metavar=("K", "SERVERS"))
    group.add_argument("--preset", default=None, metavar="NAME",
                       help="Instead of --topology: a named deployment preset (`topology"
                            " list`), e.g. deepseek-decode-ep144, nvl72-4racks.")


def cluster_from_args(args: argparse.Namespace) -> ClusterSpec | None:
    """The cluster the arguments name (``None`` when neither was given)."""
    from simulator.cluster.families import BUILDERS
    from simulator.cluster.io import load_cluster
    from simulator.cluster.presets import build_preset

    if args.topology is not None:
        return load_cluster(args.topology)
    if args.preset is not None:
        return build_preset(args.preset, "--preset")
    if args.fat_tree is not None:
        k, servers = args.fat_tree
        return BUILDERS["fat-tree"](k=k, num_servers=servers)  # its size checked first
    return None


def cluster_label(args: argparse.Namespace) -> str | None:
    """How the run's metadata names the cluster: the file, or the shorthand."""
    if args.topology is not None:
        return str(args.topology)
    if args.fat_tree is not None:
        return f"--fat-tree {args.fat_tree[0]} {args.fat_tree[1]}"
    if args.preset is not None:
        return f"--preset {args.preset}"
    return None
