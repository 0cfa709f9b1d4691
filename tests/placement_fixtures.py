"""Placement problems on built clusters for the placement tests, without the experiment layer.

The cluster's numbers come from ``simulator.cluster.arrays.placement_arrays`` (what placement
sees of a routed cluster); slots default to the fewest that hold one copy of every expert and
its replicas (``placement.problem.default_slots``), as ``moe-netsim place`` sets them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from placement import ExpertLayout, PlacementProblem, check_layout
from placement.problem import default_slots
from simulator.cluster.arrays import placement_arrays
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import RouteTable, build_route_table
from traces.model import ModelSpec

# 3 servers x 8 GPUs on a k=4 fat tree (pod 0: two servers under edge 0, one under edge 1).
FAT_TREE_3 = build_route_table(build_fat_tree(4, 3))


def cluster_problem(
    routes: RouteTable,
    activation: np.ndarray,
    model: ModelSpec | None = None,
    *,
    num_redundant: int = 0,
    slots_per_gpu: int | None = None,
    per_layer_per_gpu: int | None = None,
    origin_activation: np.ndarray | None = None,
    **kw: Any,
) -> PlacementProblem:
    """``activation`` [layers, experts] placed on ``routes``' cluster; ``model`` gives the
    layer indices and routing groups; ``origin_activation`` [layers, experts, gpus] also sets
    the origin weights (its sum per GPU); ``kw`` are further ``PlacementProblem`` fields."""
    L, E = activation.shape
    slots, per_layer = default_slots(L, E + num_redundant, routes.num_gpus)
    if model is not None:
        kw.update(layer_indices=model.moe_layer_indices, expert_groups=model.num_expert_groups)
    if origin_activation is not None:
        kw["origin_weight"] = origin_activation.sum(axis=(0, 1))
    return PlacementProblem(
        activation=activation,
        slots_per_gpu=slots if slots_per_gpu is None else slots_per_gpu,
        max_per_gpu_per_layer=per_layer if per_layer_per_gpu is None else per_layer_per_gpu,
        num_redundant=num_redundant,
        origin_activation=origin_activation,
        **placement_arrays(routes),
        **kw,
    )


def feasible_layouts(problem: PlacementProblem) -> Iterator[ExpertLayout]:
    """Every single-copy layout the checker accepts, by enumeration (G^(L x E) candidates:
    tiny problems only), for brute-force optima."""
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    for assign in itertools.product(range(G), repeat=L * E):
        layout = ExpertLayout.from_primary(np.array(assign).reshape(L, E), G)
        if not check_layout(problem, layout):
            yield layout
