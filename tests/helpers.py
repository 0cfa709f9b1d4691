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



def uneven_cluster(
    sizes: tuple[int, ...] = (3, 1, 4, 2),
    nic_gbit: tuple[float, ...] = (100, 200, 400, 400),
    per_gpu_nics: bool = False,
    nvlink_bw: float = 4.5e11,
) -> ClusterSpec:
    """Servers of ``sizes`` GPUs with NICs of ``nic_gbit`` Gb/s (per server) on one spine.

    Pooled NICs: server s on leaf s // 2 through one uplink of (its GPUs x its NIC rate).
    Per-GPU NICs: rail switch r for every GPU index r; GPU g of server s owns the link from s to
    rail g at the server's NIC rate; rails join through the spine.
    """
    nodes: list[NodeSpec] = [NodeSpec("spine", "switch", tier="spine")]
    links: list[LinkSpec] = []
    rails = max(sizes)
    if per_gpu_nics:
        for r in range(rails):
            nodes.append(NodeSpec(f"rail{r}", "switch", tier="rail"))
            links.append(LinkSpec(f"rail{r}", "spine", 4e11, 1e-6, 1.0, "spine"))
    else:
        for leaf in range((len(sizes) + 1) // 2):
            nodes.append(NodeSpec(f"leaf{leaf}", "switch", tier="leaf"))
            links.append(LinkSpec(f"leaf{leaf}", "spine", 4e11, 1e-6, 1.0, "spine"))
    for s, (n, gbit) in enumerate(zip(sizes, nic_gbit, strict=True)):
        nodes.append(NodeSpec(f"s{s}", "server"))
        rate = gbit * 1e9 / 8
        for g in range(n):
            nodes.append(NodeSpec(f"s{s}.g{g}", "gpu", server=f"s{s}"))
            links.append(LinkSpec(f"s{s}.g{g}", f"s{s}", nvlink_bw, 5e-7, 0.0, "nvlink"))
            if per_gpu_nics:
                links.append(LinkSpec(f"s{s}", f"rail{g}", rate, 1e-6, 1.0, "rail",
                                      nic_gpu=f"s{s}.g{g}"))
        if not per_gpu_nics:
            links.append(LinkSpec(f"s{s}", f"leaf{s // 2}", n * rate, 1e-6, 1.0, "access"))
    return ClusterSpec("uneven", tuple(nodes), tuple(links),
                       f"servers of {list(sizes)} GPUs, NICs {list(nic_gbit)} Gb/s")


# a study file's [model] table: tiny-moe with 4 MoE layers, 16 routed experts (+1 shared), top-2
STUDY_MODEL_TOML = """[model]
name = "tiny-moe"
moe_layer_indices = [1, 2, 3, 4]
num_routed_experts = 16
num_shared_experts = 1
top_k = 2
hidden_size = 512
"""
