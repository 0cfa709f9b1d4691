"""The named presets against their published numbers, and the nvl72 family's NVLink domain."""

from __future__ import annotations

import re

import numpy as np
import pytest

from experiments.cli import main
from experiments.studies.sections import build_cluster
from simulator.cluster.families import BUILDERS
from simulator.cluster.nvl72 import NIC_TIER, build_nvl72
from simulator.cluster.paths import build_route_table
from simulator.cluster.presets import PRESETS, PUBLISHED, R1_ROUTED_EXPERTS, build_preset
from simulator.cluster.topology import GBIT, GBYTE
from traces.infra.errors import InputError

# Link counts worked out by hand from the published numbers (not from the builders):
# 8-GPU nodes on a rail-optimized fabric of one group with 4 spines: one NVLink link per GPU,
# one NIC link per GPU, 8 rails x 4 spines rail-spine links.
#   prefill EP32: 32 + 32 + 32 = 96;  decode EP144: 144 + 144 + 32 = 320;
#   SGLang decode EP72: 72 + 72 + 32 = 176.
# NVL72 racks: per GPU one NVLink link, one NIC host-side link and one NIC cable; 4 rails x 4
# spines: one rack 3 x 72 + 16 = 232, four racks 3 x 288 + 16 = 880.
EXPECTED_LINKS = {
    "deepseek-prefill-ep32": 96, "deepseek-decode-ep144": 320, "sglang-prefill-ep32": 96,
    "sglang-decode-ep72": 176, "nvl72-rack": 232, "nvl72-4racks": 880,
}


def test_every_preset_has_a_hand_count() -> None:
    assert set(EXPECTED_LINKS) == set(PRESETS) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_matches_published_numbers(name: str) -> None:
    row = PUBLISHED[name]
    c = build_preset(name)
    assert c.name == name
    assert len(c.links) == EXPECTED_LINKS[name]
    assert c.num_gpus == row.gpus == row.servers * row.gpus_per_server
    assert c.num_servers == row.servers
    assert (np.bincount(c.gpu_server) == row.gpus_per_server).all()
    # one NIC per GPU at the published line rate (Gb/s per direction)
    nics = [lk for lk in c.links if lk.nic_gpu]
    assert c.has_gpu_nics and len(nics) == row.gpus
    assert {lk.bandwidth_bytes_per_s for lk in nics} == {row.nic_gbit_per_s * GBIT}
    # every GPU's NVLink port: half the vendor's both-directions figure
    gpus = set(c.gpus)
    nvlink = [lk for lk in c.links if lk.a in gpus or lk.b in gpus]
    assert len(nvlink) == row.gpus
    assert {lk.bandwidth_bytes_per_s for lk in nvlink} == {
        row.nvlink_gbyte_per_s_both_directions * GBYTE / 2}
    if row.ep_size:  # the EP layout: every GPU holds the same number of routed experts
        assert row.ep_size == row.gpus
        assert R1_ROUTED_EXPERTS + row.redundant_experts == row.ep_size * row.routed_experts_per_gpu
    if row.gpus_per_tray:
        trays = {re.sub(r"\.g\d+$", "", g) for g in c.gpus}
        assert len(trays) == row.gpus // row.gpus_per_tray == 18 * row.servers
        # the vendor's aggregate: 72 GPUs x 1.8 TB/s = 129.6 TB/s, quoted as 130 TB/s
        total = row.gpus_per_server * 2 * nvlink[0].bandwidth_bytes_per_s
        assert total == pytest.approx(row.nvlink_total_tbyte_per_s * 1e12, rel=0.005)
    assert row.sources and all(isinstance(s, str) and s for s in row.sources)


def test_deepseek_numbers_as_published() -> None:
    # DeepSeek day-6 overview: prefill 4 nodes / EP32 / 9 experts per GPU, decode 18 nodes /
    # EP144 / 2 per GPU, 32 redundant; 8 x 400 Gb/s NICs and 8 H800 per node (400 GB/s NVLink)
    p, d = PUBLISHED["deepseek-prefill-ep32"], PUBLISHED["deepseek-decode-ep144"]
    assert (p.servers, p.ep_size, p.routed_experts_per_gpu) == (4, 32, 9)
    assert (d.servers, d.ep_size, d.routed_experts_per_gpu) == (18, 144, 2)
    assert p.redundant_experts == d.redundant_experts == 32
    assert p.nvlink_bytes_per_s == 200e9 and p.nic_bytes_per_s == 50e9
    s = PUBLISHED["sglang-decode-ep72"]
    assert (s.servers, s.gpus, s.nvlink_bytes_per_s) == (9, 72, 450e9)
    assert s.assumed  # the blog does not state the NICs


def test_intra_rack_routes_never_touch_the_scale_out_fabric() -> None:
    c = build_nvl72(num_racks=2, gpus_per_rack=8, gpus_per_tray=4)
    routes = build_route_table(c)
    gs = c.gpu_server
    tier = [lk.tier for lk in c.links]
    for a in range(c.num_gpus):
        for b in range(c.num_gpus):
            if a == b:
                continue
            used = {tier[d // 2] for d in routes.path(a, b)}
            if gs[a] == gs[b]:
                assert used == {"nvlink"}  # GPU -> NVSwitch domain -> GPU
                assert routes.distance[a, b] == 0
            else:  # NIC host side, cable, rail switch, cable, NIC host side (+ NVLink ends)
                assert NIC_TIER in used and routes.distance[a, b] >= 2


@pytest.mark.parametrize("scale_out", ["rail-optimized", "leaf-spine"])
def test_nvl72_scale_out_distances(scale_out: str) -> None:
    c = build_nvl72(num_racks=3, gpus_per_rack=8, gpus_per_tray=4, scale_out=scale_out,
                    racks_per_group=3 if scale_out == "rail-optimized" else None)
    d = build_route_table(c).distance
    cross = d[c.gpu_server[:, None] != c.gpu_server[None, :]]
    # rail-optimized, one group: every rack pair is 2 hops apart on a rail (the nearest NICs);
    # leaf-spine: NIC cable, leaf-spine, spine-leaf, NIC cable = 4
    assert set(np.unique(cross)) == ({2.0} if scale_out == "rail-optimized" else {4.0})


def test_nvl72_family_parameters() -> None:
    c = BUILDERS["nvl72"](num_racks="2", gpus_per_rack=36, scale_out="leaf-spine",
                          nic_bandwidth_bytes_per_s=1e11)
    assert c.num_gpus == 72 and c.num_servers == 2
    assert {lk.bandwidth_bytes_per_s for lk in c.links if lk.nic_gpu} == {1e11}
    for bad, msg in (({"scale_out": "torus"}, "unknown scale_out"),
                     ({"gpus_per_tray": 5}, "not a whole number of trays"),
                     ({"leaves_per_rack": 19, "scale_out": "leaf-spine"}, "exceeds the 18 trays"),
                     ({"gpus_per_server": 8}, "unknown parameter"),
                     ({"scale_out": 3}, "expected a string")):
        with pytest.raises(InputError, match=msg):
            BUILDERS["nvl72"](**bad)


def test_presets_in_studies_and_cli(tmp_path, capsys) -> None:
    assert build_cluster({"family": "nvl72-rack"}).num_gpus == 72
    with pytest.raises(InputError, match="preset nvl72-rack has fixed numbers"):
        build_cluster({"family": "nvl72-rack", "params": {"num_racks": 2}})
    with pytest.raises(InputError, match="unknown topology family or preset"):
        build_cluster({"family": "nvl73"})
    assert main(["topology", "show"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS) and "source: DeepSeek" in out
    assert main(["topology", "build", "deepseek-prefill-ep32", "--out",
                 str(tmp_path / "c.json")]) == 0
    from simulator.cluster.io import load_cluster
    assert load_cluster(tmp_path / "c.json").links == build_preset("deepseek-prefill-ep32").links
