"""The cluster arguments every command that takes a cluster shares: a file or a shorthand."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulator.cluster.topology import ClusterSpec


def add_cluster_arguments(p: argparse.ArgumentParser, required: bool, help_file: str) -> None:
    """``--topology FILE``, ``--preset NAME`` or ``--fat-tree K SERVERS`` (at most one)."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--topology", type=Path, help=help_file)
    group.add_argument("--fat-tree", type=int, nargs=2, metavar=("K", "SERVERS"),
                       help="Instead of --topology: build a k-ary fat tree with this many"
                            " servers of 8 GPUs.")
    group.add_argument("--preset", default=None, metavar="NAME",
                       help="Instead of --topology: a named deployment preset (`topology"
                            " list`), e.g. deepseek-decode-ep144, nvl72-4racks.")


def cluster_from_args(args: argparse.Namespace) -> ClusterSpec | None:
    """The cluster the arguments name (``None`` when neither was given)."""
    from simulator.cluster.builders import build_fat_tree
    from simulator.cluster.io import load_cluster
    from simulator.cluster.presets import build_preset

    if args.topology is not None:
        return load_cluster(args.topology)
    if args.preset is not None:
        return build_preset(args.preset, "--preset")
    if args.fat_tree is not None:
        k, servers = args.fat_tree
        return build_fat_tree(k, servers)
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
