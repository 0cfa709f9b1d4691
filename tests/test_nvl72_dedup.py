"""De-duplication keeps traffic inside NVL72 racks: a case small enough to work by hand.

Two racks of 4 GPUs (trays of 2), one NVSwitch domain each, joined by a leaf-spine fabric with
one NIC per GPU.  One MoE layer of 8 experts, top-2, one slot per GPU.  Tokens that start in
rack 0 pick {0, 4} or {1, 5}; tokens that start in rack 1 pick {2, 6} or {3, 7}.

* round-robin puts expert e on GPU e, so experts 0-3 in rack 0 and 4-7 in rack 1: every token
  has exactly one expert in the other rack.  Under ``deepep-normal`` that is one RDMA copy per
  token: dispatch enters the scale-out fabric once (hidden 16 x 1 byte = 16 bytes) and combine
  once (16 x 2 bytes = 32 bytes): 48 bytes per token, 48 x 64 = 3072 bytes for 64 tokens.
* ``dedup`` (fitted on the same tokens and origins) can hold {0, 1, 4, 5} in rack 0 and
  {2, 3, 6, 7} in rack 1 (4 experts per rack, one per GPU): no token leaves its rack, 0 bytes,
  and its fitted cost reaches its lower bound of 0 (status optimal).
"""

from __future__ import annotations

import numpy as np
from helpers import make_trace, tiny_model

from experiments.pipeline import build_problem, token_sample
from placement import SolverOptions, check_layout, solve_placement
from simulator.analytic import count_traffic
from simulator.cluster.nvl72 import build_nvl72
from simulator.cluster.paths import build_route_table
from simulator.traffic_config import TrafficConfig

TOKENS = 64
PAIRS = ((0, 4), (1, 5), (2, 6), (3, 7))  # pairs 0, 1 start in rack 0; pairs 2, 3 in rack 1


def _case():
    cluster = build_nvl72(num_racks=2, gpus_per_rack=4, gpus_per_tray=2,
                          scale_out="leaf-spine", num_spines=1)
    routes = build_route_table(cluster)
    model = tiny_model(1, 8, 2, hidden=16)
    pair = np.arange(TOKENS) % 4
    experts = np.array([PAIRS[p] for p in pair])[:, None, :]  # [tokens, 1 layer, top-2]
    rack = pair // 2
    origin = rack * 4 + (np.arange(TOKENS) // 4) % 4  # spread over the rack's 4 GPUs
    trace = make_trace(model, experts, origin=origin)
    return cluster, routes, model, trace


def _scale_out_bytes(routes, trace, expert_gpus) -> float:
    res = count_traffic([trace], routes, expert_gpus,
                        TrafficConfig(1.0, 2.0, dispatch="deepep-normal"))
    return float(res.summary["network_bytes"])


def test_dedup_keeps_every_token_inside_its_nvl72_rack() -> None:
    cluster, routes, model, trace = _case()
    assert list(cluster.gpu_server) == [0, 0, 0, 0, 1, 1, 1, 1]
    round_robin = np.arange(8).reshape(1, 8, 1)
    assert _scale_out_bytes(routes, trace, round_robin) == 48 * TOKENS  # one copy per token

    act = np.bincount(trace.experts[:, 0].ravel(), minlength=8)[None, :] / TOKENS
    problem = build_problem(routes, model, act, sample=token_sample([trace], 8))
    res = solve_placement(problem, "dedup", SolverOptions(time_limit_s=10, seed=0))
    assert res.is_ok and check_layout(problem, res.layout) == []
    assert res.status.value == "optimal"  # the lower bound 0 is met
    racks = cluster.gpu_server[res.layout.expert_gpus[0, :, 0]]
    assert racks[0] == racks[4] == racks[1] == racks[5] != racks[2]
    assert racks[2] == racks[6] == racks[3] == racks[7]
    assert _scale_out_bytes(routes, trace, res.layout.expert_gpus) == 0.0


def test_gpu_balance_of_the_replay_hand_computed() -> None:
    # every expert serves 16 of the 64 tokens (each pair is picked by 16): round-robin gives
    # every GPU 16 routes, max/mean = 1; all 8 experts on GPU 0 give it 128 routes and the
    # mean 128 / 8 = 16, max/mean = 8
    _, routes, _, trace = _case()
    config = TrafficConfig(1.0, 2.0, dispatch="deepep-normal")
    spread = count_traffic([trace], routes, np.arange(8).reshape(1, 8, 1), config)
    piled = count_traffic([trace], routes, np.zeros((1, 8, 1), dtype=np.int64), config)
    assert spread.gpu_routes.tolist() == [[16] * 8]
    assert spread.summary["gpu_balance_max_over_mean"] == 1.0
    assert piled.summary["gpu_balance_max_over_mean"] == 8.0
