"""Traffic bytes reach the placement problem from the replay's TrafficConfig, and the cluster
gives placement its arrays without the experiment pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.pipeline import build_problem
from placement import PlacementProblem, expected_cost, solve_placement
from simulator.cluster.arrays import placement_arrays
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.traffic_config import TrafficConfig
from traces import model_preset

MODEL = model_preset("deepseek-moe-16b")
ROUTES = build_route_table(build_fat_tree(4, 4))


def test_bytes_per_element_reach_the_problem():
    act = np.full((MODEL.num_moe_layers, MODEL.num_routed_experts), MODEL.top_k
                  / MODEL.num_routed_experts)
    default = build_problem(ROUTES, MODEL, act)
    # TrafficConfig's defaults: 1 byte per element out (FP8), 2 back (BF16), times hidden 2048.
    assert (default.dispatch_bytes, default.combine_bytes) == (2048.0, 4096.0)
    traffic = TrafficConfig(dispatch_bytes_per_element=2.0, combine_bytes_per_element=0.5)
    p = build_problem(ROUTES, MODEL, act, traffic=traffic)
    assert (p.dispatch_bytes, p.combine_bytes) == (4096.0, 1024.0)
    # The wire cost is dispatch x s/B(o -> u) + combine x s/B(u -> o): it follows the bytes.
    spb = p.pair_seconds_per_byte
    np.testing.assert_allclose(p.round_trip("wire"), 4096.0 * spb + 1024.0 * spb.T)
    lay = solve_placement(default, "round-robin").layout
    assert expected_cost(p, lay, "wire") != pytest.approx(expected_cost(default, lay, "wire"))


def test_placement_arrays_build_a_problem_alone():
    arrays = placement_arrays(ROUTES)
    g = ROUTES.num_gpus
    assert arrays["distance"].shape == (g, g) and arrays["gpu_server"].shape == (g,)
    act = np.full((2, 8), 0.25)
    problem = PlacementProblem(**arrays, activation=act, slots_per_gpu=1,
                               max_per_gpu_per_layer=1)
    res = solve_placement(problem, "ilp-bottleneck")
    assert res.is_ok
    # Same problem through the pipeline (with its default traffic): same arrays.
    piped = build_problem(ROUTES, MODEL, np.full((MODEL.num_moe_layers, 64), 6 / 64))
    np.testing.assert_array_equal(piped.server_link_incidence, arrays["server_link_incidence"])


@pytest.mark.parametrize("where", ["table", "axis"])
def test_renamed_study_key_names_the_new_one(where):
    from experiments.studies.spec import build_study
    from traces.infra.errors import InputError

    raw = {"trace": {"micro_batch_tokens": 64}} if where == "table" else {
        "axes": {"trace.micro_batch_tokens": [64, 128]}}
    with pytest.raises(InputError, match=r"^s: trace\.micro_batch_tokens was renamed"
                                         r" sim\.microbatch_tokens"):
        build_study(raw, where="s")

