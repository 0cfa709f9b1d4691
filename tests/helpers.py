"""Small builders shared by tests."""

from __future__ import annotations

import numpy as np

from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces import ModelSpec, RoutingTrace, TraceMeta


def two_server_cluster(
    nvlink_bw: float = 100.0,
    net_bw: float = 10.0,
    nvlink_lat: float = 0.01,
    net_lat: float = 0.1,
    second_server_gpus: int = 1,
) -> ClusterSpec:
    """g0 - s0 - sw - s1 - g1 (, g2, ...): two servers behind one switch."""
    far = [f"g{i}" for i in range(1, second_server_gpus + 1)]
    nodes = (
        NodeSpec("s0", "server"),
        NodeSpec("g0", "gpu", server="s0"),
        NodeSpec("s1", "server"),
        *(NodeSpec(g, "gpu", server="s1") for g in far),
        NodeSpec("sw", "switch", tier="edge"),
    )
    links = (
        LinkSpec("g0", "s0", nvlink_bw, nvlink_lat, 0.0, "nvlink"),
        *(LinkSpec(g, "s1", nvlink_bw, nvlink_lat, 0.0, "nvlink") for g in far),
        LinkSpec("s0", "sw", net_bw, net_lat, 1.0, "access"),
        LinkSpec("s1", "sw", net_bw, net_lat, 1.0, "access"),
    )
    return ClusterSpec("two-servers", nodes, links)


def tiny_model(layers: int = 1, experts: int = 2, top_k: int = 1, hidden: int = 10) -> ModelSpec:
    return ModelSpec("tiny", tuple(range(layers)), experts, 0, top_k, hidden)


def make_trace(
    model: ModelSpec,
    experts: np.ndarray,
    origin: np.ndarray | None = None,
    step: np.ndarray | None = None,
) -> RoutingTrace:
    n = experts.shape[0]
    return RoutingTrace(
        meta=TraceMeta(model=model, source="test"),
        experts=np.asarray(experts, dtype=np.uint8),
        seq_id=np.arange(n, dtype=np.int64),
        position=np.zeros(n, dtype=np.int32),
        origin_gpu=None if origin is None else np.asarray(origin, dtype=np.int32),
        step=None if step is None else np.asarray(step, dtype=np.int32),
    )

