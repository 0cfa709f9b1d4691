"""``nvl72``: rack-scale NVLink domains (GB200 NVL72 class) joined by a scale-out fabric.

One rack is one NVSwitch domain: all its GPUs reach each other through the NVLink switch
trays at ``nvswitch_bandwidth_bytes_per_s`` per GPU and direction, non-blocking.  In the
cluster model the rack is one server node (the NVSwitch domain) and every GPU of the rack hangs
off it, so traffic between two GPUs of a rack never leaves it: no route between them touches a
NIC or a switch of the scale-out fabric.

The rack's GPUs sit on compute trays of ``gpus_per_tray``; GPU i of a tray owns NIC i of the
tray.  Because a rack's many NICs can reach the same scale-out switch (rail i of every tray
goes to rail switch i) and the model has one link per node pair, every NIC is a node of its
own (a switch of tier ``nic``): the rack node links to it (the NIC's host side: its line rate,
hop weight 0, owned by its GPU through ``LinkSpec.nic_gpu``) and it links to the scale-out
switch (the cable: line rate, hop weight 1).  A route between racks therefore has the same hop
weights as in the ``rail-optimized`` family (2 on one rail, 4 across rails) and two more links.

Names: rack ``r<R>``, GPU ``r<R>.t<T>.g<I>`` (tray T, GPU I of the tray), NIC ``r<R>.t<T>.nic<I>``.

Scale-out fabrics (``scale_out``):

* ``rail-optimized``: racks in groups of ``racks_per_group``; each group has one rail switch
  per GPU index of a tray (``u<G>.rail<I>``) holding NIC I of every tray of the group; every
  rail switch links to every spine with (NICs of the rail) x NIC rate / (oversubscription x
  spines).
* ``leaf-spine``: each rack's trays split in ``leaves_per_rack`` contiguous blocks, each block's
  NICs on one leaf switch (``r<R>.leaf<J>``); every leaf links to every spine with (NIC ports
  of a full leaf) x NIC rate / (oversubscription x spines).
"""

from __future__ import annotations

import math

from simulator.cluster.builders import LinkDefaults
from simulator.cluster.topology import GBYTE, ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError

NIC_TIER = "nic"
SCALE_OUT_FABRICS = ("rail-optimized", "leaf-spine")
NVL72_NVSWITCH_BYTES_PER_S = 900 * GBYTE  # 1.8 TB/s per GPU, both directions together


def _check(num_racks: int, gpus_per_rack: int, gpus_per_tray: int, scale_out: str,
           group: int, leaves: int, num_spines: int, oversubscription: float,
           nvswitch: float) -> None:
    for name, value in (("num_racks", num_racks), ("gpus_per_rack", gpus_per_rack),
                        ("gpus_per_tray", gpus_per_tray), ("racks_per_group", group),
                        ("leaves_per_rack", leaves), ("num_spines", num_spines)):
        if value < 1:
            raise InputError(f"nvl72: {name} must be >= 1, got {value}")
    if gpus_per_rack % gpus_per_tray:
        raise InputError(
            f"nvl72: gpus_per_rack {gpus_per_rack} is not a whole number of trays of"
            f" gpus_per_tray {gpus_per_tray}"
        )
    if scale_out == "leaf-spine" and leaves > gpus_per_rack // gpus_per_tray:
        raise InputError(
            f"nvl72: leaves_per_rack {leaves} exceeds the {gpus_per_rack // gpus_per_tray}"
            " trays of a rack"
        )
    if scale_out not in SCALE_OUT_FABRICS:
        raise InputError(
            f"nvl72: unknown scale_out {scale_out!r}; choose one of"
            f" {', '.join(SCALE_OUT_FABRICS)}"
        )
    for name, x in (("oversubscription", oversubscription),
                    ("nvswitch_bandwidth_bytes_per_s", nvswitch)):
        if not (math.isfinite(x) and x > 0):
            raise InputError(f"nvl72: {name} must be a finite number > 0, got {x}")


def build_nvl72(
    num_racks: int = 1,
    gpus_per_rack: int = 72,
    gpus_per_tray: int = 4,
    nvswitch_bandwidth_bytes_per_s: float = NVL72_NVSWITCH_BYTES_PER_S,
    scale_out: str = "rail-optimized",
    racks_per_group: int | None = None,
    leaves_per_rack: int | None = None,
    num_spines: int = 4,
    oversubscription: float = 1.0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """Racks of ``gpus_per_rack`` GPUs (trays of ``gpus_per_tray``), one NVSwitch domain each,
    joined by a ``scale_out`` fabric with one NIC per GPU (module docstring).

    ``racks_per_group`` (rail-optimized; default: all racks in one group) and
    ``leaves_per_rack`` (leaf-spine; default: 2, or 1 for a one-tray rack) shape the scale-out
    fabric.  Link parameters used:
    ``nic_bandwidth_bytes_per_s``, ``nvlink_latency_s``, ``network_latency_s``.

    Examples
    --------
    >>> c = build_nvl72(num_racks=2)
    >>> c.num_gpus, c.num_servers, c.has_gpu_nics
    (144, 2, True)
    """
    d = defaults or LinkDefaults()
    group = num_racks if racks_per_group is None else racks_per_group
    trays = gpus_per_rack // gpus_per_tray if gpus_per_tray > 0 else 0
    if leaves_per_rack is None:
        leaves_per_rack = max(1, min(2, trays))
    _check(num_racks, gpus_per_rack, gpus_per_tray, scale_out, group, leaves_per_rack,
           num_spines, oversubscription, nvswitch_bandwidth_bytes_per_s)
    nic = d.nic_bandwidth_bytes_per_s
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []

    def cable(a: str, b: str, bandwidth: float, tier: str) -> None:
        links.append(LinkSpec(a, b, bandwidth, d.network_latency_s, 1.0, tier))

    spines = [f"spine{s}" for s in range(num_spines)]
    nodes += [NodeSpec(s, "switch", tier="spine") for s in spines]
    if scale_out == "rail-optimized":
        groups = -(-num_racks // group)
        uplink = group * trays * nic / (oversubscription * num_spines)
        for g in range(groups):
            for i in range(gpus_per_tray):
                nodes.append(NodeSpec(f"u{g}.rail{i}", "switch", tier="rail", group=g))
                for s in spines:
                    cable(f"u{g}.rail{i}", s, uplink, "spine")
    else:
        per_leaf = -(-trays // leaves_per_rack)
        uplink = per_leaf * gpus_per_tray * nic / (oversubscription * num_spines)
    for r in range(num_racks):
        rack = f"r{r}"
        nodes.append(NodeSpec(rack, "server", group=r))
        if scale_out == "leaf-spine":
            for j in range(leaves_per_rack):
                nodes.append(NodeSpec(f"{rack}.leaf{j}", "switch", tier="leaf", group=r))
                for s in spines:
                    cable(f"{rack}.leaf{j}", s, uplink, "spine")
        for t in range(trays):
            for i in range(gpus_per_tray):
                gpu, port = f"{rack}.t{t}.g{i}", f"{rack}.t{t}.nic{i}"
                nodes.append(NodeSpec(gpu, "gpu", server=rack, group=r))
                nodes.append(NodeSpec(port, "switch", tier=NIC_TIER, group=r))
                links.append(LinkSpec(gpu, rack, nvswitch_bandwidth_bytes_per_s,
                                      d.nvlink_latency_s, 0.0, "nvlink"))
                links.append(LinkSpec(rack, port, nic, 0.0, 0.0, NIC_TIER, nic_gpu=gpu))
                if scale_out == "rail-optimized":
                    cable(port, f"u{r // group}.rail{i}", nic, "rail")
                else:
                    cable(port, f"{rack}.leaf{t * leaves_per_rack // trays}", nic, "leaf")
    fabric = (f"rail-optimized ({-(-num_racks // group)} group(s) of {group} racks,"
              f" {gpus_per_tray} rails)" if scale_out == "rail-optimized"
              else f"leaf-spine ({leaves_per_rack} leaves per rack)")
    description = (
        f"{num_racks} NVLink rack(s) of {gpus_per_rack} GPUs ({trays} trays of"
        f" {gpus_per_tray}), NVSwitch {nvswitch_bandwidth_bytes_per_s / GBYTE:g} GB/s per GPU"
        f" and direction, one {nic * 8 / 1e9:g} Gb/s NIC per GPU, {fabric}, {num_spines}"
        f" spines, oversubscription {oversubscription:g}:1"
    )
    return ClusterSpec(f"nvl72-{num_racks}r-{scale_out}", tuple(nodes), tuple(links),
                       description)
