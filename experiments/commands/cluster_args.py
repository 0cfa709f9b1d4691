"""The cluster arguments every command that takes a cluster shares: a file or a shorthand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.options import add_number
from traces.infra.errors import InputError
from traces.infra.options import Range

if TYPE_CHECKING:
    from simulator.cluster.topology import ClusterSpec

CLUSTER_BAR_DELAY_S = 2.0  # reading or building a cluster shows its bar after this long


def add_cluster_arguments(p: argparse.ArgumentParser, required: bool, help_file: str) -> None:
    """``--topology FILE``, ``--preset NAME`` or ``--fat-tree K SERVERS`` (at most one)."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--topology", type=Path, help=help_file)
    _add_shorthands(group, "--topology")


def add_cluster_source(p: argparse.ArgumentParser, help_file: str) -> None:
    """A positional ``CLUSTER`` file, or ``--fat-tree K SERVERS`` / ``--preset NAME`` instead.

    For the commands that read one cluster as their subject (``topology info|draw|whatif``);
    exactly one of the three is required (:func:`source_cluster`).
    """
    p.add_argument("cluster", type=Path, nargs="?", default=None,
                   help=f"{help_file} Or --fat-tree / --preset instead.")
    _add_shorthands(p.add_mutually_exclusive_group(), "CLUSTER")


def _add_shorthands(group: argparse._ActionsContainer, instead_of: str) -> None:
    add_number(group, "--fat-tree", int, None, f"Instead of {instead_of}: build a k-ary fat tree"
               " with this many servers of 8 GPUs.", "", Range(1, 2**20), nargs=2,
               metavar=("K", "SERVERS"))
    group.add_argument("--preset", default=None, metavar="NAME",
                       help=f"Instead of {instead_of}: a named deployment preset (`topology"
                            " list`), e.g. deepseek-decode-ep144, nvl72-4racks.")


def source_cluster(args: argparse.Namespace) -> tuple[ClusterSpec, str]:
    """The cluster of :func:`add_cluster_source` and how messages name it."""
    given = sum(x is not None for x in (args.cluster, args.fat_tree, args.preset))
    if given != 1:
        raise InputError("give the cluster as a file (CLUSTER), --fat-tree K SERVERS or"
                         f" --preset NAME: exactly one ({given} given)")
    cluster = cluster_from_args(args, file_dest="cluster")
    label = cluster_label(args, file_dest="cluster")
    assert cluster is not None and label is not None
    return cluster, label


def cluster_from_args(args: argparse.Namespace, file_dest: str = "topology") -> ClusterSpec | None:
    """The cluster the arguments name (``None`` when neither was given); a seconds bar while a
    large one is read or built (after :data:`CLUSTER_BAR_DELAY_S`)."""
    from experiments.progress import Feedback
    from simulator.cluster.families import BUILDERS
    from simulator.cluster.io import load_cluster
    from simulator.cluster.presets import build_preset

    path = getattr(args, file_dest)
    label = cluster_label(args, file_dest)
    if label is None:
        return None
    verb = "reading" if path is not None else "building"
    with Feedback.from_args(args).ticking(None, f"cluster: {verb} {label}", CLUSTER_BAR_DELAY_S):
        if path is not None:
            return load_cluster(path)
        if args.preset is not None:
            return build_preset(args.preset, "--preset")
        k, servers = args.fat_tree
        return BUILDERS["fat-tree"](k=k, num_servers=servers)  # its size checked first


def cluster_label(args: argparse.Namespace, file_dest: str = "topology") -> str | None:
    """How the run's metadata names the cluster: the file, or the shorthand."""
    path = getattr(args, file_dest)
    if path is not None:
        return str(path)
    if args.fat_tree is not None:
        return f"--fat-tree {args.fat_tree[0]} {args.fat_tree[1]}"
    if args.preset is not None:
        return f"--preset {args.preset}"
    return None
