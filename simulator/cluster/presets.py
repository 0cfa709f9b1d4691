"""Named deployment presets: clusters people run DeepSeek-class MoE models on, with sources.

``PUBLISHED`` is the one table of published numbers (GPUs, nodes, NICs, link rates, the
expert-parallel layout) with the public source of each; every preset is built from its row, and
``tests/test_presets.py`` checks the built cluster against the row (link counts, bandwidths,
GPUs).  Numbers a source does not state are listed in the row's ``assumed`` with the value
used, never passed off as published.

Bandwidths: vendors quote NVLink as the sum of both directions (H800: 400 GB/s, H100:
900 GB/s, GB200 NVL72: 1.8 TB/s per GPU); the cluster model's links carry a rate per
direction, so the presets use half of it (200, 450 and 900 GB/s).  NICs are quoted per
direction (400 Gb/s = 50 GB/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.cluster.families import BUILDERS
from simulator.cluster.topology import GBIT, GBYTE, ClusterSpec
from traces.infra.errors import InputError

R1_ROUTED_EXPERTS = 256  # DeepSeek-V3/R1 routed experts per MoE layer


@dataclass(frozen=True)
class PublishedDeployment:
    """A deployment's published numbers and where they come from."""

    gpus: int
    servers: int = field(metadata={"help": "Nodes (8-GPU servers) or NVLink racks."})
    gpus_per_server: int
    nic_gbit_per_s: float = field(metadata={"help": "One NIC, each direction; one per GPU."})
    nvlink_gbyte_per_s_both_directions: float = field(
        metadata={"help": "Vendor NVLink figure per GPU (sum of both directions)."}
    )
    gpu: str
    sources: tuple[str, ...]
    ep_size: int = 0  # expert-parallel degree of the deployment (0: not an EP deployment)
    redundant_experts: int = 0
    routed_experts_per_gpu: int = 0
    gpus_per_tray: int = 0  # rack-scale systems: GPUs (and NICs) per compute tray
    nvlink_total_tbyte_per_s: float = 0.0  # rack-scale systems: the vendor's aggregate figure
    assumed: tuple[str, ...] = ()  # values no source states, with what is used
    notes: str = ""

    @property
    def nvlink_bytes_per_s(self) -> float:
        """Per GPU and direction: half the vendor's both-directions figure."""
        return self.nvlink_gbyte_per_s_both_directions * GBYTE / 2

    @property
    def nic_bytes_per_s(self) -> float:
        return self.nic_gbit_per_s * GBIT


_DS_DAY6 = ("DeepSeek inference system overview (day 6 of open-source week, 2025): prefill"
            " EP32 / decode EP144, deployment units of 4 and 18 nodes, 32 redundant routed"
            " experts, 9 (prefill) and 2 (decode) routed experts per GPU")
_DS_V3 = ("DeepSeek-V3 technical report §3.4: prefill minimum deployment unit of 4 nodes"
          " (32 H800 GPUs); §3.1: 8 GPUs per node on NVLink/NVSwitch, InfiniBand across nodes")
_DS_ISCA = ("Insights into DeepSeek-V3 (ISCA 2025), network section: every H800 node has 8 GPUs"
            " and 8 InfiniBand ConnectX-7 NICs of 400 Gb/s, each GPU/NIC pair on its own plane"
            " of a multi-plane fat tree")
_H800 = "NVIDIA H800 SXM specification: NVLink 400 GB/s (both directions)"
_H100 = "NVIDIA H100 SXM specification: NVLink 900 GB/s (both directions)"
_SGL = ("SGLang blog (LMSYS, 2025-05-05): deploying DeepSeek with PD disaggregation and"
        " large-scale EP on 96 H100 GPUs (12 nodes of 8 H100 in Atlas Cloud); prefill measured"
        " on 4 nodes (EP32), decode on 9 nodes (EP72)")
_SGL_NIC = ("nic_gbit_per_s = 400 and the rail-optimized fabric: the blog does not state the"
            " NICs; DGX-H100-class nodes have 8 ConnectX-7 NICs of 400 Gb/s, one per GPU")
_SGL_RED = ("redundant_experts = 32 (288 physical experts: 9 per GPU at EP32, 4 at EP72): the"
            " blog cites 288-expert layouts as an example, not per phase")
_NVL = ("NVIDIA GB200 NVL72 specification: 72 Blackwell GPUs in one NVLink domain, 1.8 TB/s"
        " NVLink per GPU, 130 TB/s in all")
_NVL_TRAYS = ("NVIDIA multi-node NVLink tuning guide, GB200 72x1 reference configuration: 18"
              " compute trays of 4 GPUs, 9 NVLink switch trays, ConnectX-7 NICs in the compute"
              " trays (400 Gb/s, one per GPU)")
_MPFT_NOTE = ("Rail i of the rail-optimized fabric is DeepSeek's plane i; the model joins the"
              " planes by spines (DeepSeek's planes are separate and forward across planes"
              " inside the node): only the deepep-ll scheme sends across planes.")

PUBLISHED: dict[str, PublishedDeployment] = {
    "deepseek-prefill-ep32": PublishedDeployment(
        gpus=32, servers=4, gpus_per_server=8, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=400, gpu="H800", ep_size=32,
        redundant_experts=32, routed_experts_per_gpu=9,
        sources=(_DS_DAY6, _DS_V3, _DS_ISCA, _H800),
        notes="DeepSeek-V3 §3.2.2 measures about 160 GB/s NVLink and 50 GB/s IB per GPU in"
              " practice; the preset uses the line rates. " + _MPFT_NOTE,
    ),
    "deepseek-decode-ep144": PublishedDeployment(
        gpus=144, servers=18, gpus_per_server=8, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=400, gpu="H800", ep_size=144,
        redundant_experts=32, routed_experts_per_gpu=2,
        sources=(_DS_DAY6, _DS_ISCA, _H800),
        notes="The V3 report's decode unit is 40 nodes (EP320); the inference system overview"
              " runs decode at EP144 on 18 nodes. " + _MPFT_NOTE,
    ),
    "sglang-prefill-ep32": PublishedDeployment(
        gpus=32, servers=4, gpus_per_server=8, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=900, gpu="H100", ep_size=32,
        redundant_experts=32, routed_experts_per_gpu=9, sources=(_SGL, _H100),
        assumed=(_SGL_NIC, _SGL_RED),
    ),
    "sglang-decode-ep72": PublishedDeployment(
        gpus=72, servers=9, gpus_per_server=8, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=900, gpu="H100", ep_size=72,
        redundant_experts=32, routed_experts_per_gpu=4, sources=(_SGL, _H100),
        assumed=(_SGL_NIC, _SGL_RED),
    ),
    "nvl72-rack": PublishedDeployment(
        gpus=72, servers=1, gpus_per_server=72, gpus_per_tray=4, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=1800, nvlink_total_tbyte_per_s=130, gpu="B200",
        sources=(_NVL, _NVL_TRAYS),
        assumed=("the scale-out fabric: rail-optimized, rail i = NIC i of every tray, 4 spines"
                 " (unused inside one rack)",),
    ),
    "nvl72-4racks": PublishedDeployment(
        gpus=288, servers=4, gpus_per_server=72, gpus_per_tray=4, nic_gbit_per_s=400,
        nvlink_gbyte_per_s_both_directions=1800, nvlink_total_tbyte_per_s=130, gpu="B200",
        sources=(_NVL, _NVL_TRAYS),
        assumed=("the scale-out fabric: rail-optimized, the 4 racks in one group (rail i = NIC"
                 " i of every tray), 4 spines, non-blocking",),
    ),
}

PRESET_SPINES = 4  # spines of every preset's scale-out fabric (assumed; see ``assumed``)


@dataclass(frozen=True)
class Preset:
    """A named cluster: a family and parameters derived from its :data:`PUBLISHED` row."""

    name: str
    published: PublishedDeployment

    @property
    def family(self) -> str:
        return "nvl72" if self.published.gpus_per_tray else "rail-optimized"

    @property
    def params(self) -> dict[str, Any]:
        p = self.published
        if self.family == "nvl72":
            return {"num_racks": p.servers, "gpus_per_rack": p.gpus_per_server,
                    "gpus_per_tray": p.gpus_per_tray, "num_spines": PRESET_SPINES,
                    "nvswitch_bandwidth_bytes_per_s": p.nvlink_bytes_per_s,
                    "nic_bandwidth_bytes_per_s": p.nic_bytes_per_s}
        return {"num_servers": p.servers, "servers_per_group": p.servers,
                "num_spines": PRESET_SPINES, "gpus_per_server": p.gpus_per_server,
                "nvlink_bandwidth_bytes_per_s": p.nvlink_bytes_per_s,
                "nic_bandwidth_bytes_per_s": p.nic_bytes_per_s}

    @property
    def summary(self) -> str:
        p = self.published
        unit = ("rack" if p.gpus_per_tray else "node") + ("s" if p.servers > 1 else "")
        ep = f", EP{p.ep_size}" if p.ep_size else ""
        return (f"{p.gpus} {p.gpu} GPUs: {p.servers} {unit} of {p.gpus_per_server}{ep}"
                f" ({self.family})")

    def build(self) -> ClusterSpec:
        c = BUILDERS[self.family](**self.params)
        return ClusterSpec(self.name, c.nodes, c.links, f"preset {self.name}: {c.description}")

    def describe(self) -> list[str]:
        """The preset's numbers and sources, one item per line."""
        p = self.published
        lines = [f"{self.name}: {self.summary}",
                 f"  NVLink {p.nvlink_gbyte_per_s_both_directions:g} GB/s per GPU (both"
                 f" directions; {p.nvlink_bytes_per_s / GBYTE:g} GB/s each way in the model),"
                 f" one {p.nic_gbit_per_s:g} Gb/s NIC per GPU"]
        if p.gpus_per_tray:
            lines.append(f"  trays of {p.gpus_per_tray} GPUs, NVLink total"
                         f" {p.nvlink_total_tbyte_per_s:g} TB/s per rack")
        if p.ep_size:
            lines.append(f"  EP{p.ep_size}, {p.redundant_experts} redundant experts,"
                         f" {p.routed_experts_per_gpu} routed experts per GPU")
        lines += [f"  source: {s}" for s in p.sources]
        lines += [f"  assumed: {a}" for a in p.assumed]
        if p.notes:
            lines.append(f"  note: {p.notes}")
        return lines


PRESETS: dict[str, Preset] = {name: Preset(name, row) for name, row in PUBLISHED.items()}


def build_preset(name: str, where: str = "preset") -> ClusterSpec:
    """The named preset's cluster; an unknown name is an :class:`InputError` listing them."""
    if name not in PRESETS:
        raise InputError(f"{where}: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].build()
