"""What a dispatch scheme's kernel does on each receiving GPU besides moving bytes.

DeepEP's low-latency kernels (``deepep-ll``) cost, per phase and GPU, a fixed time whatever
they move and a local copy through the GPU's own memory (HBM) of every copy they received
(csrc/kernels/internode_ll.cu of deepseek-ai/DeepEP at de8cfca, the code DeepEP's published
low-latency table was measured with; docs/background/timing-calibration.md gives the lines):

* **dispatch**: the receive phase waits for each (expert, source rank) count and then copies
  those tokens from the receive buffer into the packed per-expert output (data, scales and
  source index): every received copy is read and written once, ``2 x bytes_per_copy``.  A
  batch is copied as soon as it has arrived, while others still travel; the GPU's copies
  run one after another at the copy rate (:data:`simulator.timing.HBM_COPY_BYTES_PER_S`),
  its own copies (its tokens for its own experts) first.
* **combine**: the receive phase waits until *every* source has flagged its copies as sent,
  then (after a grid-wide sync) reduces each token's top-k received copies into one output
  row: every received copy is read once, every token's output row written once.  Nothing of
  this overlaps the arrivals.

In both phases a GPU's receive work starts only after its own send phase: its NVLink
messages of the phase have landed (:class:`ReceiveWork`, ``sync_from``).

A GPU's data of the phase counts as delivered when its local copy work is done, plus the
fixed time.  Local copies are not network bytes: they load no link and change no byte
count.  Schemes not listed in :data:`KERNEL_COST` do no local work (NCCL's all-to-all and
DeepEP's normal kernels, whose receive copies are pipelined with the arrivals over
milliseconds and whose fixed time is not applied, see the calibration page).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.dispatch import PhasePlan
from simulator.timing import (
    DEEPEP_LL_COMBINE_KERNEL_S,
    DEEPEP_LL_DISPATCH_KERNEL_S,
    HBM_COPY_BYTES_PER_S,
)


@dataclass(frozen=True, slots=True)
class KernelCost:
    """One phase of a scheme's kernel on a receiving GPU: its fixed time and the rate at
    which it copies received bytes through the GPU's memory (bytes read + written per s)."""

    fixed_s: float
    copy_bytes_per_s: float


# (dispatch, combine) per scheme
KERNEL_COST: dict[str, tuple[KernelCost, KernelCost]] = {
    "deepep-ll": (
        KernelCost(DEEPEP_LL_DISPATCH_KERNEL_S.value, HBM_COPY_BYTES_PER_S.value),
        KernelCost(DEEPEP_LL_COMBINE_KERNEL_S.value, HBM_COPY_BYTES_PER_S.value),
    ),
}


@dataclass(frozen=True, eq=False)
class ReceiveWork:
    """One phase's local work on each receiving GPU (module docstring), in seconds.

    ``start_s[b]``: the work GPU b has from the phase start (its own copies);
    ``message_s[m]``: the work message m's copies add once arrived (messages that deliver
    to a GPU); ``pipelined``: the GPU works through each arrived message while others
    travel (dispatch), else all of it waits for the GPU's last arrival (combine).
    ``sync_from[m]``: the GPU whose receive phase waits for message m, -1 if none: the
    kernels run their receive phase after their send phase (a grid-wide sync), and a send
    phase lasts until its NVLink copies (warp stores to the peer) have landed, while RDMA
    writes are only posted; so a GPU's receive work starts once its GPU-to-GPU NVLink
    messages of the phase have arrived.
    """

    fixed_s: float
    start_s: np.ndarray  # [gpus]
    message_s: np.ndarray  # [messages]
    sync_from: np.ndarray  # [messages]
    pipelined: bool


def receive_work(
    scheme: str, combine: bool, plan: PhasePlan, bytes_per_copy: float,
    own_routes: np.ndarray, tokens_from: np.ndarray,
) -> ReceiveWork | None:
    """The phase's :class:`ReceiveWork` under ``scheme`` (``plan``: the phase's messages), or
    None when the scheme has none.  ``own_routes[b]``: routes whose token starts and is
    computed on GPU b; ``tokens_from[b]``: tokens starting on b."""
    costs = KERNEL_COST.get(scheme)
    if costs is None:
        return None
    cost = costs[int(combine)]
    per_byte_s = 1.0 / cost.copy_bytes_per_s
    if combine:  # read every received copy (own ones too), write each token's output
        start_bytes = (own_routes + tokens_from) * bytes_per_copy
        per_copy = bytes_per_copy
    else:  # read and write every received copy
        start_bytes = own_routes * 2.0 * bytes_per_copy
        per_copy = 2.0 * bytes_per_copy
    final = plan.down >= 0  # GPU to GPU over NVLink alone, delivering (feeding nothing)
    final[plan.feeds[0]] = False
    nvlink = final & (plan.pair < 0) & (plan.up >= 0)
    return ReceiveWork(
        cost.fixed_s, start_bytes * per_byte_s, plan.copies * (per_copy * per_byte_s),
        np.where(nvlink, plan.up, -1), pipelined=not combine,
    )


def phase_work(
    scheme: str, plan: PhasePlan, bytes_per_copy: tuple[float, float],
    own_routes: np.ndarray, tokens_from: np.ndarray,
) -> tuple[ReceiveWork | None, ReceiveWork | None]:
    """The (dispatch, combine) :class:`ReceiveWork` of one layer whose dispatch plan is
    ``plan`` (combine: its mirror); ``bytes_per_copy``: (dispatch, combine)."""
    return (
        receive_work(scheme, False, plan, bytes_per_copy[0], own_routes, tokens_from),
        receive_work(scheme, True, plan.mirror(), bytes_per_copy[1], own_routes, tokens_from),
    )


class ReceiveClock:
    """When each GPU's local work of one phase is done, as the phase's messages arrive.

    Per GPU: ``left`` delivering messages still travelling; ``synced`` once its receive
    phase may start (``sync_left``: its NVLink messages still travelling); ``free_s``: when
    the work it has started ends; ``held_s``: work waiting (for the sync; in a phase that is
    not pipelined, for the last arrival).  A GPU is done, once all its messages have arrived
    and it is synced (at ``now``), at ``max(free_s, now) + held_s + fixed_s``.  Vectorised
    methods for the flow engine, scalar ones (on lists, cheap per message) for the DES.
    """

    def __init__(self, work: ReceiveWork, left: np.ndarray, now: float) -> None:
        self.work = work
        g = left.shape[0]
        src = work.sync_from[work.sync_from >= 0]
        self.sync_left = np.bincount(src, minlength=g)
        self.synced = self.sync_left == 0
        self.left = left.copy()
        self.receives = left > 0
        self.free_s = np.full(g, float(now))
        self.held_s = work.start_s.copy()
        if work.pipelined:
            self.free_s[self.synced] += self.held_s[self.synced]
            self.held_s[self.synced] = 0.0

    def arrived(self, gpus: np.ndarray, msgs: np.ndarray, now: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Messages ``msgs`` delivering to ``gpus`` (repeats allowed) arrived at ``now``: the
        GPUs now done and when."""
        w = self.work
        g = self.left.shape[0]
        hit = np.bincount(gpus, minlength=g)
        self.left -= hit
        add = np.bincount(gpus, weights=w.message_s[msgs], minlength=g)
        hit_b = hit > 0
        if w.pipelined:
            on = hit_b & self.synced
            self.free_s[on] = np.maximum(self.free_s[on], now) + add[on]
            self.held_s[hit_b & ~self.synced] += add[hit_b & ~self.synced]
        else:
            self.held_s += add
        src = w.sync_from[msgs]
        src = src[src >= 0]
        cand = hit_b
        if src.size:
            self.sync_left -= np.bincount(src, minlength=g)
            new = ~self.synced & (self.sync_left == 0)
            self.synced |= new
            self.free_s[new] = np.maximum(self.free_s[new], now)
            if w.pipelined:
                self.free_s[new] += self.held_s[new]
                self.held_s[new] = 0.0
            cand = cand | new
        done = np.flatnonzero(cand & (self.left == 0) & self.synced & self.receives)
        return done, np.maximum(self.free_s[done], now) + self.held_s[done] + w.fixed_s

    def scalar(self) -> ReceiveClock:
        """Switch to :meth:`arrived_one` (lists)."""
        self.l_left, self.l_sync_left = self.left.tolist(), self.sync_left.tolist()
        self.l_synced, self.l_receives = self.synced.tolist(), self.receives.tolist()
        self.l_free, self.l_held = self.free_s.tolist(), self.held_s.tolist()
        self.l_message, self.l_sync_from = (self.work.message_s.tolist(),
                                            self.work.sync_from.tolist())
        return self

    def arrived_one(self, b: int, m: int, now: float) -> list[tuple[int, float]]:
        """:meth:`arrived` for one message m delivering to GPU b."""
        w = self.work
        self.l_left[b] -= 1
        if w.pipelined and self.l_synced[b]:
            self.l_free[b] = max(self.l_free[b], now) + self.l_message[m]
        else:
            self.l_held[b] += self.l_message[m]
        out = []
        if self.l_left[b] == 0 and self.l_synced[b]:
            out.append((b, max(self.l_free[b], now) + self.l_held[b] + w.fixed_s))
        a = self.l_sync_from[m]
        if a >= 0:
            self.l_sync_left[a] -= 1
            if self.l_sync_left[a] == 0:
                self.l_synced[a] = True
                self.l_free[a] = max(self.l_free[a], now)
                if w.pipelined:
                    self.l_free[a] += self.l_held[a]
                    self.l_held[a] = 0.0
                if self.l_left[a] == 0 and self.l_receives[a]:
                    out.append((a, self.l_free[a] + self.l_held[a] + w.fixed_s))
        return out
