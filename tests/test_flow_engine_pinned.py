"""Flow mode's results pinned: a small fat-tree replay gives the numbers main gave at
69ee30e, to the last bit (rel 1e-12), so that changes to the engine's cost
(simulator.flow_engine, flow_network, maxmin, flow_paths) cannot move a result unnoticed.
The numbers are a regression record, not hand arithmetic: the hand cases are in
tests/test_flow_mode.py and tests/test_maxmin*.py."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_trace, tiny_model

from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.flow_engine import simulate_flow
from simulator.traffic_config import TrafficConfig

# (tolerance, in flight, multipath): sum of layer durations, makespan, p99 token latency,
# link bytes, sum of window utilisations (all recorded on main at 69ee30e)
PINNED = {
    (0.01, 1, "spray"): (0.0004253835670634921, 0.00042538356706349207,
                         0.0001465283136507936, 32747520.0, 18.564026942821016),
    (0.01, 1, "ecmp"): (0.00042543796706349214, 0.0004254379670634921,
                        0.00014654847365079364, 32747520.0, 18.561653193546448),
    (0.01, 2, "spray"): (0.00045188071777489095, 0.0002761351623993503,
                         0.0001732006318945022, 32747520.0, 28.597705309906416),
    (0.01, 2, "ecmp"): (0.0004519217420131721, 0.00027616157451849086,
                        0.00017321585500973657, 32747520.0, 28.59497022266263),
    (0.0, 1, "spray"): (0.00042855320888888896, 0.00042855320888888896,
                        0.00014936536888888885, 32747520.0, 18.426724701172997),
    (0.0, 1, "ecmp"): (0.0004286037688888889, 0.0004286037688888889,
                       0.00014938264888888884, 32747520.0, 18.424551003066803),
    (0.0, 2, "spray"): (0.0004535317333333336, 0.0002769646933333335,
                        0.00017434389333333337, 32747520.0, 28.512052944220713),
    (0.0, 2, "ecmp"): (0.00045358613333333365, 0.00027700181333333354,
                       0.00017436501333333335, 32747520.0, 28.50823214827517),
}


def _traces(num_gpus: int):
    rng = np.random.default_rng(7)
    model = tiny_model(layers=3, experts=16, top_k=4, hidden=512)
    out = []
    for _ in range(3):
        experts = np.stack([np.stack([rng.choice(16, 4, replace=False) for _ in range(3)])
                            for _ in range(96)])
        out.append(make_trace(model, experts, origin=rng.integers(0, num_gpus, 96)))
    return out


@pytest.mark.parametrize("key", sorted(PINNED))
def test_a_small_fat_tree_replay_gives_the_pinned_results(key):
    tolerance, inflight, multipath = key
    routes = build_route_table(build_fat_tree(4, 8))  # 64 GPUs
    g = routes.num_gpus
    layout = (np.arange(3)[:, None] * 16 + np.arange(16)[None, :]) % g
    cfg = SimConfig(traffic=TrafficConfig(dispatch="all-to-all", multipath=multipath),
                    mode="flow", flow_tolerance=tolerance, inflight_microbatches=inflight,
                    chunk_bytes=4096, expert_time_per_route_s=1e-6)
    res = simulate_flow(_traces(g), routes, layout, cfg)
    got = (float(res.layers["duration_s"].sum()), float(res.summary["makespan_s"]),
           float(res.summary["latency_p99_s"]), float(res.links["bytes"].sum()),
           float(res.utilisation["utilisation"].sum()))
    assert got == pytest.approx(PINNED[key], rel=1e-12, abs=0)
