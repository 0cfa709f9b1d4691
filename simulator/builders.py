"""Topology builders: pure functions returning a validated :class:`ClusterSpec`."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.topology import GBIT, GBYTE, ClusterSpec, LinkSpec, NodeSpec
from traces.errors import InputError


@dataclass(frozen=True, slots=True)
class LinkDefaults:
    """Realistic defaults (DGX-H100-class servers, 400 Gb/s fabric); every one overridable."""

    gpus_per_server: int = field(default=8, metadata={"help": "GPUs per server."})
    nvlink_bandwidth_bytes_per_s: float = field(
        default=450 * GBYTE, metadata={"help": "GPU <-> server NVLink fabric, each direction."}
    )
    nvlink_latency_s: float = field(default=0.5e-6, metadata={"help": "NVLink hop latency."})
    nic_bandwidth_bytes_per_s: float = field(
        default=8 * 400 * GBIT, metadata={"help": "Server uplink (all its NICs together)."}
    )
    switch_bandwidth_bytes_per_s: float = field(
        default=8 * 400 * GBIT, metadata={"help": "Switch-to-switch link, each direction."}
    )
    network_latency_s: float = field(default=1.0e-6, metadata={"help": "Per network hop."})


def _server_nodes(
    index: int, d: LinkDefaults, group: int
) -> tuple[list[NodeSpec], list[LinkSpec], str]:
    server = f"s{index}"
    nodes = [NodeSpec(server, "server", group=group)]
    links = []
    for g in range(d.gpus_per_server):
        gpu = f"{server}.g{g}"
        nodes.append(NodeSpec(gpu, "gpu", server=server, group=group))
        links.append(
            LinkSpec(gpu, server, d.nvlink_bandwidth_bytes_per_s, d.nvlink_latency_s, 0.0, "nvlink")
        )
    return nodes, links, server


def build_fat_tree(k: int, num_servers: int, defaults: LinkDefaults | None = None) -> ClusterSpec:
    """k-ary fat tree: k pods of k/2 edge and k/2 aggregation switches, (k/2)^2 cores.

    Servers fill the host slots in order (edge switch 0 of pod 0 first, k/2 servers per edge
    switch), so a ``num_servers`` below k^3/4 gives a partially populated fabric.  Only pods
    and edge switches that hold servers are built; cores only when more than one pod is used.
    Edge switch ``e`` of a pod links to every aggregation switch of the pod; aggregation
    switch ``a`` links to cores ``a*k/2 .. a*k/2 + k/2 - 1``.
    """
    d = defaults or LinkDefaults()
    if k < 2 or k % 2:
        raise InputError(f"fat-tree: k must be an even number >= 2, got {k}")
    half = k // 2
    capacity = k * half * half
    if not 1 <= num_servers <= capacity:
        raise InputError(
            f"fat-tree: a k={k} fat tree holds 1..{capacity} servers, asked for {num_servers}"
        )
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    net = (d.switch_bandwidth_bytes_per_s, d.network_latency_s, 1.0)
    pods_used = (num_servers + half * half - 1) // (half * half)
    for pod in range(pods_used):
        for a in range(half):
            nodes.append(NodeSpec(f"p{pod}.agg{a}", "switch", tier="aggregation", group=pod))
        for e in range(half):
            first = pod * half * half + e * half
            if first >= num_servers:
                break
            edge = f"p{pod}.edge{e}"
            nodes.append(NodeSpec(edge, "switch", tier="edge", group=pod))
            for a in range(half):
                links.append(LinkSpec(edge, f"p{pod}.agg{a}", *net, "aggregation"))
            for s in range(first, min(first + half, num_servers)):
                snodes, slinks, server = _server_nodes(s, d, pod)
                nodes += snodes
                links += slinks
                links.append(
                    LinkSpec(
                        server, edge, d.nic_bandwidth_bytes_per_s, d.network_latency_s, 1.0,
                        "access",
                    )
                )
    if pods_used > 1:
        for c in range(half * half):
            nodes.append(NodeSpec(f"core{c}", "switch", tier="core"))
        for pod in range(pods_used):
            for a in range(half):
                for j in range(half):
                    links.append(LinkSpec(f"p{pod}.agg{a}", f"core{a * half + j}", *net, "core"))
    return ClusterSpec(
        name=f"fat-tree-k{k}-{num_servers}s",
        nodes=tuple(nodes),
        links=tuple(links),
        description=(
            f"{k}-ary fat tree, {num_servers} servers of {d.gpus_per_server} GPUs"
            f" ({pods_used} pod(s) used of {k})"
        ),
    )


# Builders by family name, for the command line and study files.  Each takes keyword
# parameters and returns a ClusterSpec.
BUILDERS = {
    "fat-tree": build_fat_tree,
}
