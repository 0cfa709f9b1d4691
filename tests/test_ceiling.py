"""The ceiling (placement.ceiling) against brute force, and no strategy below it (property)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ExpertLayout, PlacementProblem, SolverOptions, expected_cost, solve_placement
from placement.ceiling import hop_ceiling
from tests.placement_fixtures import feasible_layouts

OPTS = SolverOptions(time_limit_s=30.0)


def _problem(seed: int, L: int = 2, E: int = 3, G: int = 3, redundant: int = 0,
             servers: tuple[int, ...] = (0, 0, 1)) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 5, size=(G, G)).astype(float)
    d = d + d.T
    np.fill_diagonal(d, 0.0)
    oa = rng.random((L, E, G)) ** 3  # skewed per origin
    oa *= 2.0 / oa.sum(axis=(1, 2), keepdims=True)  # top_k = 2 per layer
    per = -(-(E + redundant) // G)
    return PlacementProblem(
        distance=d, gpu_server=np.array(servers), activation=oa.sum(axis=2),
        slots_per_gpu=L * per, max_per_gpu_per_layer=per, origin_activation=oa,
        num_redundant=redundant,
    )


@pytest.mark.parametrize("seed", range(6))
def test_ceiling_equals_brute_force_minimum(seed):
    p = _problem(seed)
    best = min(expected_cost(p, lay) for lay in feasible_layouts(p))  # 3^6 layouts
    c = hop_ceiling(p, OPTS)
    assert c.kind == "exact"
    assert c.hops_per_token == pytest.approx(best, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_replica_bound_is_below_every_replica_layout(seed):
    # one layer, 2 experts + 1 redundant copy on 3 GPUs (2 servers): every way to give the
    # layer 3 copies (each expert at least one, at most one copy per GPU per expert)
    p = _problem(seed, L=1, E=2, G=3, redundant=1)
    best = np.inf
    for a in range(3):
        for b in range(3):
            for extra_expert, extra_gpu in itertools.product(range(2), range(3)):
                eg = np.full((1, 2, 2), -1)
                eg[0, 0, 0], eg[0, 1, 0] = a, b
                first = (a, b)[extra_expert]
                if extra_gpu == first:
                    continue
                eg[0, extra_expert, 1] = extra_gpu
                per_gpu = np.bincount(eg[eg >= 0], minlength=3)
                if per_gpu.max() > p.max_per_gpu_per_layer:
                    continue
                best = min(best, expected_cost(p, ExpertLayout(eg, 3)))
    c = hop_ceiling(p, OPTS)
    assert c.kind == "lp-bound"
    assert c.hops_per_token <= best + 1e-9


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["round-robin", "greedy", "ilp", "ilp-load",
                                                 "ilp-origin", "ilp-bytes"]))
def test_no_strategy_beats_the_ceiling(seed, strategy):
    p = _problem(seed, L=3, E=4, G=4, servers=(0, 0, 1, 1))
    if strategy == "ilp-bytes":  # needs wire times: use the distances as seconds per byte
        from dataclasses import replace

        p = replace(p, pair_seconds_per_byte=p.distance)
    res = solve_placement(p, strategy, OPTS)
    assert res.layout is not None
    assert expected_cost(p, res.layout) >= hop_ceiling(p, OPTS).hops_per_token - 1e-9
