"""Flow mode (simulator.flow_engine) against hand arithmetic and against the DES."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import make_trace, tiny_model, two_server_cluster

from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.flow_engine import simulate_flow
from simulator.microbatches import microbatches
from simulator.replay import replay
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError

FAST = 1e6  # NVLink B/s in the star cases: 10 B take 1e-5 s


def _star(uplink_bw: tuple[float, float, float] = (10.0, 10.0, 10.0)) -> ClusterSpec:
    """g0-s0, g1-s1, g2-s2 behind one switch; NVLink FAST B/s, network links as given (B/s,
    both directions), no latency anywhere."""
    nodes = [NodeSpec("sw", "switch", tier="edge")]
    links = []
    for i, bw in enumerate(uplink_bw):
        nodes += [NodeSpec(f"s{i}", "server"), NodeSpec(f"g{i}", "gpu", server=f"s{i}")]
        links += [LinkSpec(f"g{i}", f"s{i}", FAST, 0.0, 0.0, "nvlink"),
                  LinkSpec(f"s{i}", "sw", bw, 0.0, 1.0, "access")]
    return ClusterSpec("star", tuple(nodes), tuple(links))


def _both(cluster, experts, origin, layout, chunk_bytes=1_000_000, **kw):
    routes = build_route_table(cluster)
    model = tiny_model(experts=layout.shape[1])
    trace = make_trace(model, experts, origin=origin)
    cfg = dict(traffic=TrafficConfig(1.0, kw.pop("combine", 2.0)), chunk_bytes=chunk_bytes,
               expert_time_per_route_s=kw.pop("compute", 0.0), **kw)
    des = simulate([trace], routes, layout, SimConfig(**cfg))
    flow = simulate_flow([trace], routes, layout, SimConfig(mode="flow", flow_tolerance=0.0, **cfg))
    return des, flow


def test_one_message_per_stage_store_and_forward_equals_the_des_exactly():
    # The DES's hand case (tests/test_simulator_handcomputed.py), one chunk per message.
    # Flow mode: the 20 B network message runs at 10 B/s over s0->sw->s1: 2 s, plus the
    # pipeline fill of its one chunk on the other hop (20/10 + 20/10 - 20/10 = 2 s) and two
    # latencies (0.2 s): 0.21 + 2 + 2 + 0.2 = 4.41, the DES's arrival at s1; then 4.62
    # (dispatch), 5.62 (compute), 14.64 (combine), as worked out there.
    routes = build_route_table(two_server_cluster())
    trace = make_trace(tiny_model(), np.array([[[1]], [[1]], [[0]]]), origin=np.zeros(3))
    cfg = SimConfig(traffic=TrafficConfig(1.0, 2.0), chunk_bytes=1_000_000,
                    expert_time_per_route_s=0.5, mode="flow", flow_tolerance=0.0)
    res = simulate_flow([trace], routes, np.array([[0, 1]]), cfg)
    layer = res.layers.iloc[0]
    assert layer["dispatch_done_s"] == pytest.approx(4.62)
    assert layer["compute_done_s"] == pytest.approx(5.62)
    assert layer["finish_s"] == pytest.approx(14.64)
    np.testing.assert_allclose(res.tokens["moe_latency_s"], [14.64] * 3)


# Star cases: one token on g0 and one on g1, both routed to the expert on g2 (10 B each).
STAR_EXPERTS = np.array([[[1]], [[1]]])
STAR_ORIGIN = np.array([0, 1])
STAR_LAYOUT = np.array([[0, 2]])


def test_two_flows_sharing_a_link_get_half_each():
    # Uplinks g0->s0, g1->s1: 10 B / 1e6 = 1e-5 s.  The two network messages s0->sw->s2 and
    # s1->sw->s2 share sw->s2 (10 B/s): 5 B/s each, both through at 1e-5 + 10/5 = 2.00001,
    # plus one chunk's pipeline fill (10 x (1/10 + 1/10 - 1/10) = 1 s): 3.00001.  The
    # downlink to g2 carries both (20 B, 2e-5 s): dispatch done at 3.00003.  The DES sends
    # them one after the other on sw->s2 (1-2 s and 2-3 s after the uplinks): the same end.
    des, flow = _both(_star(), STAR_EXPERTS, STAR_ORIGIN, STAR_LAYOUT)
    assert flow.layers["dispatch_done_s"].iloc[0] == pytest.approx(3.00003)
    assert des.layers["dispatch_done_s"].iloc[0] == pytest.approx(3.00003)
    # sw->s2 carried 20 B at 10 B/s: busy 2 s in both
    for res in (des, flow):
        sw_s2 = res.links.set_index(["src", "dst"]).loc[("sw", "s2")]
        assert sw_s2["bytes"] == 20 and sw_s2["busy_s"] == pytest.approx(2.0)


def test_a_flow_bottlenecked_elsewhere_leaves_the_rest_to_the_other():
    # s1's access link runs at 2 B/s.  Max-min on sw->s2 (10 B/s): the s1 flow is held at
    # 2 B/s by its own link, the s0 flow gets the other 8 B/s: through after 10/8 = 1.25 s,
    # arriving 1.25 + 1 (pipeline fill) = 2.25 s after the uplinks.  The s1 flow: 10/2 =
    # 5 s, plus its fill 10 x (1/2 + 1/10 - 1/2) = 1 s: 6 s; dispatch done at
    # 1e-5 + 6 + 2e-5 = 6.00003, as in the DES (s1->sw 0-5 s, sw->s2 5-6 s).
    des, flow = _both(_star((10.0, 2.0, 10.0)), STAR_EXPERTS, STAR_ORIGIN, STAR_LAYOUT)
    assert flow.layers["dispatch_done_s"].iloc[0] == pytest.approx(6.00003)
    assert des.layers["dispatch_done_s"].iloc[0] == pytest.approx(6.00003)
    # utilisation of sw->s2 over time: 8 + 2 B/s (full) for 1.25 s, then 2 B/s (0.2) until
    # 5 s: busy 1.25 + 0.2 x 3.75 = 2.0 s = 20 B / 10 B/s, spread over the first 5 s
    util = flow.utilisation.merge(flow.links[["link_dir", "src", "dst"]], on="link_dir")
    sw_s2 = util[(util["src"] == "sw") & (util["dst"] == "s2")]
    assert sw_s2["busy_s"].sum() == pytest.approx(2.0)
    early = (sw_s2["start_s"] >= 1e-3) & (sw_s2["end_s"] <= 1.25)  # the flows start at 1e-5
    assert early.any() and sw_s2.loc[early, "utilisation"].min() == pytest.approx(1.0)


def test_micro_batches_that_start_together_are_served_first_come_first_served():
    # Two micro-batches in flight from time 0: mb 0's token on g0, mb 1's on g1, both to the
    # expert on g2 (10 B dispatch, 20 B combine, no compute).  Both cross sw->s2 (10 B/s).
    # The DES serves mb 0's message first: s0->sw 1e-5..1.00001, sw->s2 until 2.00001, g2's
    # downlink: dispatch done at 2.00002; mb 1's waits at sw and crosses 2.00001..3.00001:
    # 3.00002.  Flow mode (phases served in the order they start): mb 0's flow runs at 10
    # B/s, through at 1.00001, plus the one chunk's fill on its other hop (1 s) and the
    # downlink: 2.00002; mb 1's gets nothing of sw->s2 until 1.00001, then 10 B/s until
    # 2.00001, plus 1 s and the downlink: 3.00002.  Sharing fairly would give both 3.00002.
    routes = build_route_table(_star())
    trace = make_trace(tiny_model(), STAR_EXPERTS, origin=STAR_ORIGIN, step=np.array([0, 1]))
    blocks = list(microbatches([trace], None))
    cfg = dict(traffic=TrafficConfig(1.0, 2.0), chunk_bytes=1_000_000,
               expert_time_per_route_s=0.0)
    des = simulate(blocks, routes, STAR_LAYOUT, SimConfig(**cfg))
    flow = simulate_flow(blocks, routes, STAR_LAYOUT,
                         SimConfig(mode="flow", flow_tolerance=0.0, **cfg))
    for res in (des, flow):
        np.testing.assert_allclose(res.layers["dispatch_done_s"], [2.00002, 3.00002])
    np.testing.assert_allclose(flow.layers["finish_s"], des.layers["finish_s"])


def _random_case(seed: int, dispatch: str, multipath: str, tolerance: float | None = None):
    cluster = build_fat_tree(4, 4)  # 32 GPUs in 4 servers
    routes = build_route_table(cluster)
    rng = np.random.default_rng(seed)
    model = tiny_model(layers=3, experts=16, top_k=4, hidden=256)
    n = 512
    ids = np.stack([np.stack([rng.choice(16, 4, replace=False) for _ in range(3)])
                    for _ in range(n)])
    trace = make_trace(model, ids, step=np.repeat(np.arange(4), n // 4))
    layout = np.stack([rng.permutation(np.arange(16) % cluster.num_gpus) for _ in range(3)])
    cfg = dict(traffic=TrafficConfig(dispatch=dispatch, multipath=multipath), chunk_bytes=4096)
    blocks = list(microbatches([trace], None))
    des = simulate(blocks, routes, layout, SimConfig(**cfg))
    flow = simulate_flow(blocks, routes, layout,
                         SimConfig(mode="flow", flow_tolerance=tolerance, **cfg))
    return des, flow


@pytest.mark.parametrize(("seed", "dispatch", "multipath"), [
    (0, "all-to-all", "spray"), (1, "deepep-normal", "ecmp"), (2, "deepep-ll", "hash"),
])
def test_flow_mode_has_the_des_schema_bytes_and_close_layer_times(seed, dispatch, multipath):
    des, flow = _random_case(seed, dispatch, multipath)
    for name in ("links", "layers", "phases", "tokens", "gpus", "utilisation"):
        a, b = getattr(des, name), getattr(flow, name)
        assert list(a.columns) == list(b.columns), name
        assert list(a.dtypes) == list(b.dtypes), name
        assert len(a) == len(b), name
    assert set(des.summary) == set(flow.summary)
    # the same copies on the same links, the same hops and compute
    np.testing.assert_array_equal(des.links["bytes"], flow.links["bytes"])
    np.testing.assert_array_equal(des.links["chunks"], flow.links["chunks"])
    np.testing.assert_allclose(des.links["busy_s"], flow.links["busy_s"])
    pd.testing.assert_frame_equal(des.gpus, flow.gpus, check_exact=False, rtol=0.5)
    np.testing.assert_array_equal(des.gpus["routes"], flow.gpus["routes"])
    for key in ("hops_per_token", "network_bytes", "remote_copies_per_token_layer"):
        assert des.summary[key] == flow.summary[key], key
    # timing: per-layer times within 10 % of the DES
    ratio = flow.layers["duration_s"] / des.layers["duration_s"]
    assert ratio.between(0.9, 1.1).all(), ratio.tolist()
    # utilisation windows add up to each link's busy time
    busy = flow.utilisation.groupby("link_dir")["busy_s"].sum()
    np.testing.assert_allclose(busy.to_numpy(), flow.links["busy_s"].to_numpy(), rtol=1e-9,
                               atol=1e-15)


def test_exact_flow_mode_is_at_least_as_close_to_the_des_and_merging_costs_little():
    des, exact = _random_case(3, "all-to-all", "spray", tolerance=0.0)
    _, merged = _random_case(3, "all-to-all", "spray")  # the default tolerance
    assert merged.config.flow_tolerance is None
    d = des.layers["duration_s"].to_numpy()
    e = exact.layers["duration_s"].to_numpy()
    m = merged.layers["duration_s"].to_numpy()
    assert np.abs(e / d - 1).max() < 0.1
    # merging events within 1 % of the time scale moves a layer by a few percent at most
    assert np.abs(m / e - 1).max() < 0.05
    np.testing.assert_array_equal(exact.links["bytes"], merged.links["bytes"])


def test_replay_picks_the_engine_of_the_mode_and_refuses_flow_options_in_the_des():
    routes = build_route_table(two_server_cluster())
    trace = make_trace(tiny_model(), np.array([[[1]], [[0]]]), origin=np.zeros(2))
    layout = np.array([[0, 1]])
    des = replay([trace], routes, layout, SimConfig())
    flow = replay([trace], routes, layout, SimConfig(mode="flow"))
    assert des.config.mode == "des" and flow.config.mode == "flow"
    with pytest.raises(InputError, match="flow_tolerance applies to mode flow only"):
        SimConfig(flow_tolerance=0.1)
    with pytest.raises(InputError, match="unknown mode 'fluid'"):
        SimConfig(mode="fluid")
    with pytest.raises(ValueError, match="simulate\\(\\) is the DES"):
        simulate([trace], routes, layout, SimConfig(mode="flow"))
