"""Copies of a server onto its GPUs (``placement.dedup.packing``): the GPU inside a server is
free for the de-duplicated cost, so packing may only lower the busiest GPU, never move a copy
to another server, never worsen LPT's busiest GPU, and keeps every GPU's quota."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import SolverOptions
from placement.dedup import solve
from placement.dedup.layers import eplb_layer
from placement.dedup.packing import lpt, pack_server
from tests.test_dedup_fallbacks import _grouped_instance
from tests.test_placement_dedup import _problem


def _loads(loads, pick, n):
    return np.bincount(pick, weights=np.asarray(loads, dtype=float), minlength=n)


def test_hand_computed_exchange_beats_lpt():
    # loads 3,3,2,2,2,0 on 2 GPUs of 3 slots.  LPT: 3->g0, 3->g1, 2->g0 (5), 2->g1 (5),
    # 2->g0 (7), 0->g1 (5): busiest 7.  Exchange: g0 {3,2,2} gives its 3 for g1's 2
    # (moves 1): g0 {2,2,2} = 6, g1 {3,3,0} = 6: busiest 6 = total 12 / 2 GPUs, the optimum.
    loads = np.array([3, 3, 2, 2, 2, 0])
    quota = np.array([3, 3])
    assert _loads(loads, lpt(loads, quota), 2).max() == 7
    pick = pack_server(loads, quota)
    assert _loads(loads, pick, 2).tolist() == [6, 6]
    assert np.bincount(pick, minlength=2).tolist() == [3, 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=24), st.integers(1, 5),
       st.randoms(use_true_random=False))
def test_packing_keeps_quotas_and_never_worsens_lpt(loads, gpus, rnd):
    n = len(loads)
    quota = np.full(gpus, n // gpus)
    quota[: n % gpus] += 1
    quota[rnd.randrange(gpus)] += rnd.randrange(3)  # some room to spare
    loads_a = np.array(loads, dtype=float)
    pick = pack_server(loads_a, quota)
    assert (np.bincount(pick, minlength=gpus) <= quota).all()
    got = _loads(loads_a, pick, gpus).max()
    assert got <= _loads(loads_a, lpt(loads_a, quota), gpus).max() + 1e-9
    assert got >= max(loads_a.max(), loads_a.sum() / gpus) - 1e-9  # no packing does better


def test_eplb_layer_is_eplbs_own_packing():
    """EPLB's layers as EPLB packs them (``anchor``: a GPU choice that buys nothing is noise
    to the replay): the same GPU per expert, so the same cost and GPU loads."""
    experts, origins = _grouped_instance(3, tokens=240)
    p = _problem(experts, origins, gpus_per_server=4, servers=2, groups=6)
    ref = solve.eplb(p, SolverOptions()).layout
    sample = p.token_sample
    assert sample is not None
    cost = np.ones((sample.num_tokens, p.num_servers))
    for li in range(p.num_layers):
        ly = eplb_layer(p, sample.experts[:, li].astype(np.int64), sample.origin_gpu, cost,
                        ref.expert_gpus[li], "eplb")
        assert ly.copies == [(e, int(g)) for e, g in enumerate(ref.expert_gpus[li, :, 0])]
        assert ly.fallback
