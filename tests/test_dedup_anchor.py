"""Without replicas ``dedup`` keeps EPLB's GPUs on EPLB's servers and no busier server
endpoint than EPLB's (``placement.dedup.anchor``, ``trade.busiest_endpoint``): hand cases
here; the property on whole solves in tests/test_dedup_trade.py."""

from __future__ import annotations

import numpy as np

from placement.dedup.anchor import anchor_layer
from placement.dedup.layers import LayerChoice
from placement.dedup.trade import busiest_endpoint
from tests.test_placement_dedup import _problem

# EPLB's layer: experts 0,1 on GPU 0, 2,3 on GPU 1 (server 0), 4,5 on GPU 2, 6,7 on GPU 3
# (server 1).  The searched layer swaps experts 3 and 4 between the servers and packs its own
# way: GPUs [0, 1, 0, 3, 1, 2, 2, 3].
REF = np.array([0, 0, 1, 1, 2, 2, 3, 3])
SEARCHED = [0, 1, 0, 3, 1, 2, 2, 3]


def _anchor_case(loads):
    x = np.repeat(np.arange(8), loads)[:, None]  # expert e chosen loads[e] times (k = 1)
    p = _problem(np.stack([x] * 1, axis=1), np.zeros(len(x), dtype=np.int64),
                 gpus_per_server=2, servers=2)
    return p, x, LayerChoice([(e, g) for e, g in enumerate(SEARCHED)], 0, 0, 0, "searched")


def test_hand_computed_anchor():
    # Anchored: 0, 1 keep GPU 0, 2 GPU 1, 5 GPU 2, 6, 7 GPU 3 (their server is EPLB's).
    # Rooms left: GPU 1 (3 left), GPU 2 (4 left); mover 3 (now server 1) takes GPU 2,
    # mover 4 (server 0) GPU 1: [0, 0, 1, 2, 1, 2, 3, 3].  Every load 1: GPUs 2, 2, 2, 2.
    p, x, ly = _anchor_case([1] * 8)
    got = anchor_layer(p, x, ly, REF, cap=2.0)
    assert [g for _, g in got.copies] == [0, 0, 1, 2, 1, 2, 3, 3]
    # Expert 0 with 3 routes: anchored GPU 0 = 3 + 1 = 4, GPU 1 = 2.  No exchange inside
    # server 0 lowers 4 (3 for 1 gives 2 + 2 = 4 on GPU 1), so with cap 3 the layer stays
    # as it was packed, with cap 4 it is anchored.
    p, x, ly = _anchor_case([3, 1, 1, 1, 1, 1, 1, 1])
    assert anchor_layer(p, x, ly, REF, cap=3.0) is ly
    assert [g for _, g in anchor_layer(p, x, ly, REF, cap=4.0).copies] == [0, 0, 1, 2, 1, 2,
                                                                            3, 3]


def test_hand_computed_busiest_endpoint():
    # 3 servers; tokens from servers 0, 0, 1 sent to {1, 2}, {1}, {2}: server 0 sends
    # 2 + 1 = 3, server 1 sends 1; servers 1 and 2 receive 2 each: busiest 3.
    used = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)
    assert busiest_endpoint(used, np.array([0, 0, 1])) == 3.0
