"""One layer's chosen layout in ``dedup``: the copies on GPUs, what each phase cost, and the
choice between the searched layout and the layouts a layer may take unsearched.

``cheapest_layer`` keeps, of the searched layouts, EPLB's layer (the balance guard's
reference), the routing-group start and the baselines' layers (round-robin, contiguous), the
cheapest on the fitting tokens among those within the balance guard, so no layer ends worse
than those; ``to_gpus`` packs each server's copies onto its GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from placement.dedup.evaluate import remote_servers
from placement.dedup.packing import pack_server
from placement.dedup.start import group_start
from placement.dedup.state import LayerState, primary_cost
from placement.problem import PlacementProblem


@dataclass
class LayerChoice:
    """One layer's result: copies (expert, gpu) in replica order, and what each phase gave."""

    copies: list[tuple[int, int]]
    start_cost: float  # the first (structured) start, before any search
    single_cost: float
    final_cost: float
    start_name: str
    fallback: bool = False
    guard_missed: bool = False


def layer_from_layout(eg: np.ndarray) -> list[tuple[int, int]]:
    return [(e, int(g)) for e in range(eg.shape[0]) for g in eg[e] if g >= 0]


def cheapest_layer(
    problem: PlacementProblem, x: np.ndarray, o: np.ndarray, cost: np.ndarray,
    quota: np.ndarray, pcap: np.ndarray, gpu_cap: float | None,
    ref_layer: np.ndarray | None, baselines: dict[str, np.ndarray], searched: list[LayerChoice],
    why: str,
) -> LayerChoice:
    """The layer's layout: the cheapest on the sample of ``searched``, EPLB's layer (the
    balance guard's reference), the routing-group start and the baselines' layers
    (``baselines``: name -> server per expert), among those within the balance guard; the
    cheapest of all, flagged, when none is.  So no layer, searched or cut by the time limit,
    costs more than the cheapest of these that keeps the guard.  ``why`` names the others."""
    E, S, gs = problem.num_experts, problem.num_servers, problem.gpu_server
    own = gs[o]
    cap = np.bincount(gs, weights=quota, minlength=S)
    ok = [ly for ly in searched if not ly.guard_missed]
    missed = [ly for ly in searched if ly.guard_missed]
    if ref_layer is not None:
        ok.append(eplb_layer(problem, x, o, cost, ref_layer, f"eplb ({why})"))
    named = {"groups": group_start(x, own, E, problem.expert_groups, pcap), **baselines}
    for name, srv in named.items():
        if srv is None or (np.bincount(srv, minlength=S) > cap).any():
            continue
        copies, gpu_load = pack_primaries(problem, x, srv, quota)
        c = primary_cost(x, cost, srv)
        ly = LayerChoice(copies, c, c, c, f"{name} ({why})")
        if gpu_cap is None or gpu_load.max() <= gpu_cap + 1e-9:
            ok.append(ly)
        else:
            missed.append(dataclasses.replace(ly, guard_missed=True))
    return min(ok or missed, key=lambda ly: ly.final_cost)


def eplb_layer(
    problem: PlacementProblem, x: np.ndarray, o: np.ndarray, cost: np.ndarray, eg: np.ndarray,
    name: str,
) -> LayerChoice:
    """The reference's layer as EPLB packs it, at its exact cost (replicas included); not
    packed again (``anchor``: a GPU choice inside a server that buys nothing is noise)."""
    c = float((remote_servers(problem, x, o, eg)[0] * cost).sum())
    return LayerChoice(layer_from_layout(eg), c, c, c, name, fallback=True)


def to_gpus(
    problem: PlacementProblem, st: LayerState, quota: np.ndarray
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Copies on GPUs (each server's copies packed onto its GPUs) and the GPU loads."""
    return pack(problem, st.copies, st.copy_loads(), quota)


def pack_primaries(
    problem: PlacementProblem, x: np.ndarray, srv: np.ndarray, quota: np.ndarray
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """``to_gpus`` of one copy per expert on ``srv`` (no search state needed)."""
    weight = np.bincount(x.ravel(), minlength=problem.num_experts)
    return pack(problem, [[int(s)] for s in srv],
                 {(e, int(s)): int(weight[e]) for e, s in enumerate(srv)}, quota)


def pack(
    problem: PlacementProblem, copies_of: list[list[int]], loads: dict[tuple[int, int], int],
    quota: np.ndarray,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Every expert's copies (servers ``copies_of[e]``, routes ``loads[(e, server)]``) packed
    onto its servers' GPUs; the copies (expert, GPU) and the GPU loads."""
    copies: list[tuple[int, int]] = []
    gpu_load = np.zeros(problem.num_gpus)
    where: dict[tuple[int, int], int] = {}
    for s in range(problem.num_servers):
        gpus = problem.server_gpus(s)
        items = [(e, srv) for (e, srv) in loads if srv == s]
        w = np.array([loads[i] for i in items], dtype=np.float64)
        pick = pack_server(w, quota[gpus])
        for (e, _), p, wi in zip(items, pick, w, strict=True):
            where[(e, s)] = int(gpus[p])
            gpu_load[gpus[p]] += wi
    for e, cp in enumerate(copies_of):
        copies += [(e, where[(e, s)]) for s in cp]
    return copies, gpu_load
