"""Counting a layout's copies once and mapping them onto each failure's links equals counting
the trace again on every failure (every dispatch scheme, multipath mode, pooled and per-GPU
NICs, single-copy and replicated layouts)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.failure_scenarios import scenarios
from simulator.analytic import count_traffic
from simulator.cluster.builders import build_leaf_spine, build_rail_optimized
from simulator.mapped_counts import count_demand, map_demand
from simulator.traffic import TrafficConfig
from traces import SynthConfig, generate_trace
from traces.model import ModelSpec

MODEL = ModelSpec("small", (0, 1), 16, 0, 4, 32, num_expert_groups=1)
FABRICS = {
    "rail": lambda: build_rail_optimized(num_servers=3, servers_per_group=3, num_spines=2),
    "leaf-spine": lambda: build_leaf_spine(num_servers=4, servers_per_leaf=2, num_spines=2),
}


def _layout(num_gpus: int, replicated: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, num_gpus, size=(2, 16, 1))
    if not replicated:
        return first
    extra = rng.integers(0, num_gpus, size=(2, 16, 1))
    extra[:, ::2] = -1  # every other expert has one copy only
    return np.concatenate([first, extra], axis=2)


@pytest.mark.parametrize(("fabric", "scheme", "multipath", "replicated"), [
    ("rail", "deepep-normal", "spray", False), ("rail", "all-to-all", "ecmp", True),
    ("rail", "deepep-ll", "hash", True), ("leaf-spine", "deepep-normal", "spray", True)])
def test_mapped_counts_equal_a_fresh_count_on_every_failure(fabric, scheme, multipath,
                                                            replicated):
    cluster = FABRICS[fabric]()
    g = cluster.num_gpus
    trace = generate_trace(SynthConfig(MODEL, num_tokens=96, num_gpus=g, seed=3))
    blocks = [trace.take(np.arange(96) < 48), trace.take(np.arange(96) >= 48)]
    layout = _layout(g, replicated, seed=len(fabric))
    config = TrafficConfig(1.0, 2.0, dispatch=scheme, multipath=multipath)
    failures = [s for s in scenarios(cluster, "link") + scenarios(cluster, "switch")[1:]
                if s.routes is not None]
    assert len(failures) > 4
    healthy = count_demand(blocks, failures[0].routes, layout, config)
    for s in failures:
        same = np.array_equal(s.routes.distance, failures[0].routes.distance)
        demand = healthy if same or not replicated else count_demand(blocks, s.routes, layout,
                                                                     config)
        got = map_demand(demand, s.routes, config)
        want = count_traffic(blocks, s.routes, layout, config)
        np.testing.assert_allclose(got.link_bytes, want.link_bytes, rtol=1e-9, atol=1.0)
        np.testing.assert_allclose(got.lower_bound_s["lower_bound_s"],
                                   want.lower_bound_s["lower_bound_s"], rtol=1e-9)
        assert got.hops_per_token == pytest.approx(want.hops_per_token, rel=1e-12)
        assert np.array_equal(got.gpu_routes, want.gpu_routes)
        for k in ("network_bytes_dedup", "network_bytes_no_dedup",
                  "gpu_balance_max_over_mean"):
            assert got.summary[k] == want.summary[k], k
        assert got.summary["network_link_bytes"] == pytest.approx(
            want.summary["network_link_bytes"], abs=len(want.link_bytes))
