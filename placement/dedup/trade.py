"""Without replicas: are ``dedup``'s saved copies worth its stragglers?  (The straggler trade.)

Without replicas a layer saves copies mainly by putting experts chosen together on one server,
and experts chosen together are the popular ones, so the saving loads that server's GPUs: on
DeepSeek-R1 at EP32 (4 x 8 GPUs) the searched layers save 1-10 % of EPLB's copies and raise the
busiest GPU by 20-75 %, and in the simulator a layer lasts about as long computing as moving
data (the busiest GPU sets the compute time), so the trade makes every layer slower.  On ESFT's
real routing the same search saves 10-25 % for 0-50 %.

Rule (per problem, on the fitting tokens): let ``saving`` be 1 - the searched layers' cost /
EPLB's and ``rise`` the searched layers' busiest GPUs summed over EPLB's (EPLB's layers as
EPLB packs them) - 1.  When ``saving >= TRADE_RATE x rise`` the layers stand.
Otherwise every layer whose busiest GPU is above EPLB's takes the cheapest of its candidates
(``layers.cheapest_layer``: the searched layer, EPLB's, the group start, round-robin's,
contiguous's) that keeps its busiest GPU at or below EPLB's.  Then every layer's copies keep
EPLB's GPUs wherever they have EPLB's servers (``anchor``).  The search itself runs without the
cap: searched under it, the swaps it finds are noise of the sample (they lose out of sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.dedup.layers import LayerChoice

TRADE_RATE = 0.5  # relative copy saving per relative rise of the busiest GPU a problem must give


def busiest_gpu(num_gpus: int, x: np.ndarray, copies: list[tuple[int, int]]) -> float:
    """Routes of one layer's busiest GPU, every expert with one copy (``copies``: (expert,
    GPU)), on the tokens ``x`` [tokens, k]."""
    e, g = np.array(copies, dtype=np.int64).reshape(-1, 2).T
    weight = np.bincount(x.ravel(), minlength=int(e.max(initial=-1)) + 1)
    return float(np.bincount(g, weights=weight[e], minlength=num_gpus).max())


@dataclass(frozen=True)
class Trade:
    """The problem's straggler trade: the saving, the rise and whether the layers stand."""

    saving: float
    rise: float

    @property
    def worth_it(self) -> bool:
        return self.rise <= 0 or self.saving >= TRADE_RATE * self.rise

    def describe(self) -> str:
        verdict = "kept" if self.worth_it else "not kept: busiest GPU per layer <= EPLB's"
        return (f"no replicas: the searched layers save {100 * self.saving:.1f} % of EPLB's"
                f" copies for {100 * self.rise:+.1f} % on the busiest GPUs (trade rate"
                f" {TRADE_RATE:g}): {verdict}")


def straggler_trade(
    layers: list[LayerChoice], busiest: np.ndarray, ref_cost: np.ndarray, ref_busiest: np.ndarray
) -> Trade:
    """``busiest``/``ref_busiest``: each layer's busiest GPU in the searched layers / EPLB's;
    ``ref_cost``: EPLB's cost per layer on the same tokens."""
    cost = sum(ly.final_cost for ly in layers)
    total = float(ref_cost.sum())
    saving = 1 - cost / total if total > 0 else 0.0
    rise = float(busiest.sum() / ref_busiest.sum() - 1) if ref_busiest.sum() > 0 else 0.0
    return Trade(saving, rise)


def busiest_endpoint(used: np.ndarray, own: np.ndarray) -> float:
    """De-duplicated copies of one layer's busiest server endpoint, sending or receiving
    (``used`` [tokens, servers]: the remote servers each token is sent to; ``own``: its
    server).  ``deepep-normal`` sends one copy per token and remote server through the
    servers' NICs, so a layer's dispatch and combine last at least this many copies x the bytes
    of a copy / a server's NIC bandwidth: fewer copies in all with a busier endpoint is a
    slower layer."""
    S = used.shape[1]
    send = np.bincount(own, weights=used.sum(axis=1), minlength=S)
    return float(max(send.max(initial=0.0), used.sum(axis=0).max(initial=0)))
