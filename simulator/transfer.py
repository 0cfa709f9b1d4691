"""One phase's transfer in the replay: stage messages and the chunk trains that carry them.

A phase moves the messages of its :class:`simulator.dispatch.PhasePlan`; each runs over a
GPU's link to its server node, a network route between two endpoints and a server node's link
to a GPU (any of the three may be absent).  A message starts once every message feeding it
has arrived, and travels as a train of chunks of at most ``chunk_bytes`` that pipeline across
its hops.  A hop is a set of (link, share): the message's chunks are
split over the hop's links by share (multipath), and the next hop sees the latest of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import simpy
from simpy.events import NORMAL

from simulator.components import LinkDirection, Wakeup
from simulator.dispatch import PhasePlan
from simulator.receive_work import ReceiveClock, ReceiveWork
from simulator.timing import MAX_SLICES_PER_MESSAGE

MAX_SLICES = int(MAX_SLICES_PER_MESSAGE.value)


class _Run(Protocol):
    """What a transfer needs of the replay (:class:`simulator.engine._Run`)."""

    env: simpy.Environment
    g: int
    chunk: int

    def path(self, up: int, pair: int, down: int) -> Path: ...

# every hop: (link, share, share in byte units of the link's counter: share_units)
Path = Sequence[Sequence[tuple[LinkDirection, float, float]]]


class _Train:
    """One message moving hop by hop; one event per hop (its first chunk's arrival).

    The chunks travel as a uniform train (first arrival ``a``, spacing ``s``, last arrival
    ``z``) while the links allow the closed form, else as an explicit list of arrival times.
    ``a`` is also the simulated time at which the next hop's event fires.  A train has at most
    one pending event, so it reuses one :class:`Wakeup` (SimPy clears ``callbacks`` when it
    processes an event; the train puts its own list back before rescheduling).
    """

    __slots__ = (
        "path", "hop", "n", "c", "r", "nbytes", "a", "s", "z", "arrivals", "wake", "schedule",
        "next_hop", "done",
    )

    def __init__(
        self,
        env: simpy.Environment,
        path: Path,
        nbytes: int,
        chunk: int,
        on_done: Callable[[Any], None],
    ) -> None:
        self.path = path
        self.hop = 0
        n = -(-nbytes // chunk)
        self.n = n
        self.c = chunk
        self.r = nbytes - (n - 1) * chunk
        self.nbytes = nbytes
        now = float(env.now)
        self.a = now
        self.s = 0.0
        self.z = now
        self.arrivals: list[float] | None = None
        self.schedule = env.schedule
        self.next_hop: list[Callable[[Any], None]] = [self.step]
        self.done = [on_done]
        self.wake = Wakeup(on_done)
        self.step(None)

    def _sizes(self, share: float) -> list[float]:
        return [self.c * share] * (self.n - 1) + [self.r * share]

    def step(self, _ev: Any) -> None:
        hop = self.path[self.hop]
        if len(hop) == 1 and self.arrivals is None:
            link, share, units = hop[0]
            link.units += self.nbytes * units
            now = self.a
            first, self.s, last = link.reserve_uniform(
                now, self.s, self.n, self.z, self.c * share, self.r * share
            )
            self.a = first
            self.z = last
            self._advance(now, first, last)
            return
        if self.arrivals is None:
            now = self.a
            arr = [now + j * self.s for j in range(self.n - 1)] + [self.z]
        else:
            arr = self.arrivals
            now = arr[0]
        merged: list[float] | None = None
        for link, share, units in hop:
            link.units += self.nbytes * units
            out_l = link.reserve(arr, self._sizes(share))
            merged = out_l if merged is None else [
                max(x, y) for x, y in zip(merged, out_l, strict=True)
            ]
        assert merged is not None
        self.arrivals = merged
        self._advance(now, merged[0], max(merged))

    def _advance(self, now: float, first: float, last: float) -> None:
        """Move to the next hop: wake when the first chunk arrives there, or, after the last
        hop, when the last chunk has arrived."""
        self.hop += 1
        wake = self.wake
        if self.hop == len(self.path):
            wake.callbacks = self.done
            self.schedule(wake, NORMAL, last - now)  # type: ignore[arg-type]
        else:
            wake.callbacks = self.next_hop
            self.schedule(wake, NORMAL, first - now)  # type: ignore[arg-type]


class Transfer:
    """One phase's messages and their countdowns (module docstring).

    A message starts once every message feeding it has arrived and, in a gated phase
    (combine), a message entering from a GPU also waits for that GPU's compute.  A GPU's data
    has arrived once every message delivering to it has and the scheme's kernel has done its
    local work on it (``work``, :mod:`simulator.receive_work`: a fixed time and the receive
    copies through the GPU's memory).

    Sliced plans (``plan.slice_copies`` > 0, the DeepEP schemes): a message travels as
    ``rounds[m]`` slices of near-equal bytes, ceil(copies / slice_copies) but at most
    :data:`simulator.timing.MAX_SLICES_PER_MESSAGE`; messages starting together issue their
    slices round-robin (slice r of each before slice r+1 of any).  A feed joins a network
    message to an NVLink one (forwarding); both get the network message's rounds, and slice r
    of the fed message starts once slice r of each of its feeders has arrived (chunked
    forwarding, as DeepEP's forwarders do).
    """

    __slots__ = (
        "run", "plan", "rounds", "nbytes", "parts", "pending", "round_pending", "dep_off",
        "dep_ids", "on_delivered", "first_start", "deliveries", "left", "final", "gated_by",
        "clock",
    )

    def __init__(
        self,
        run: _Run,
        plan: PhasePlan,
        bytes_per_copy: int,
        gated: bool,
        on_delivered: Callable[[int], None],
        work: ReceiveWork | None = None,
    ) -> None:
        self.run = run
        self.plan = plan
        g = run.g
        n = int(plan.copies.shape[0])
        self.nbytes = (plan.copies * bytes_per_copy).tolist()
        src, dst = plan.feeds
        rounds = slice_rounds(plan)
        self.rounds = rounds.tolist()
        self.parts = self.rounds.copy()  # slices of each message still travelling
        order = np.argsort(src, kind="stable")
        self.dep_ids = dst[order].tolist()
        self.dep_off = np.searchsorted(src[order], np.arange(n + 1)).tolist()
        pending = np.bincount(dst, minlength=n)
        # per fed message and round: feeders whose slice of that round has not arrived
        self.round_pending: list[list[int] | None] | None = (
            [None] * n if plan.slice_copies > 0 and src.size else None
        )
        entry = (pending == 0) & (plan.up >= 0)
        gated_by: dict[int, list[int]] = {}
        # each GPU starts its messages in rotation order (to a+1, a+2, ...), as all-to-all
        # implementations do, so that receivers are not all hit by everyone at once: by GPU
        # when the message ends on a GPU, else by endpoint (a pooled endpoint is a server)
        n_ep = plan.num_endpoints
        pair = np.maximum(plan.pair, 0)
        on_gpu = plan.down >= 0
        turn = np.where(on_gpu, (plan.down - plan.up) % g, (pair % n_ep - pair // n_ep) % n_ep)
        order = np.lexsort((turn, plan.up))
        if gated:
            for m in order[entry[order]].tolist():
                gated_by.setdefault(int(plan.up[m]), []).append(m)
            pending = pending + entry
        self.gated_by = gated_by
        self.pending = pending.tolist()
        final = np.ones(n, dtype=bool)
        final[src] = False
        final &= plan.down >= 0
        self.final = final.tolist()
        left = np.bincount(plan.down[final], minlength=g)
        self.left = left.tolist()
        self.deliveries = int((left > 0).sum())
        self.clock = None if work is None else ReceiveClock(work, left, run.env.now).scalar()
        self.on_delivered = on_delivered
        self.first_start = -1.0
        self._start(order[pending[order] == 0].tolist())

    def release(self, a: int) -> None:
        """GPU a's compute finished: the messages its data enters by may start."""
        ready = []
        for m in self.gated_by.get(a, ()):
            p = self.pending[m] - 1
            self.pending[m] = p
            if p == 0:
                ready.append(m)
        self._start(ready)

    def _start(self, ms: list[int]) -> None:
        """Start messages ``ms`` (in this order), their slices round-robin."""
        if not ms:
            return
        if self.first_start < 0:
            self.first_start = self.run.env.now
        rounds = self.rounds
        for r in range(max(rounds[m] for m in ms)):
            for m in ms:
                if r < rounds[m]:
                    self._slice(m, r)

    def _slice(self, i: int, r: int) -> None:
        """Send slice r of message i (its bytes split near-evenly over its rounds)."""
        run = self.run

        def arrived(_e: Any, i: int = i, r: int = r) -> None:
            self._slice_arrived(i, r)

        k = self.rounds[i]
        nbytes = self.nbytes[i] // k + (r < self.nbytes[i] % k)
        if nbytes == 0:  # fewer bytes than rounds: an empty slice arrives at once
            wake = Wakeup(arrived)
            run.env.schedule(wake, NORMAL, 0.0)  # type: ignore[arg-type]
            return
        plan = self.plan
        path = run.path(int(plan.up[i]), int(plan.pair[i]), int(plan.down[i]))
        _Train(run.env, path, nbytes, run.chunk, arrived)

    def _slice_arrived(self, i: int, r: int) -> None:
        rp = self.round_pending
        if rp is not None:  # sliced forwarding: slice r of the fed messages may go
            for j in self.dep_ids[self.dep_off[i] : self.dep_off[i + 1]]:
                row = rp[j]
                if row is None:
                    row = rp[j] = [self.pending[j]] * self.rounds[j]
                row[r] -= 1
                if row[r] == 0:
                    self._slice(j, r)
        left = self.parts[i] - 1
        self.parts[i] = left
        if left == 0:
            self._arrived(i)

    def _arrived(self, i: int) -> None:
        if self.round_pending is None:
            pending = self.pending
            ready = []
            for j in self.dep_ids[self.dep_off[i] : self.dep_off[i + 1]]:
                p = pending[j] - 1
                pending[j] = p
                if p == 0:
                    ready.append(j)
            self._start(ready)
        if not self.final[i]:
            return
        b = int(self.plan.down[i])
        if self.clock is None:
            self.left[b] -= 1
            if self.left[b] == 0:
                self.on_delivered(b)
            return
        now = self.run.env.now
        for gpu, done_s in self.clock.arrived_one(b, i, now):
            self._deliver(gpu, done_s - now)

    def _deliver(self, b: int, delay: float) -> None:
        wake = Wakeup(lambda _e: self.on_delivered(b))
        self.run.env.schedule(wake, NORMAL, delay)  # type: ignore[arg-type]


def slice_rounds(plan: PhasePlan) -> np.ndarray:
    """Slices per message (:class:`Transfer`): 1 unless the plan is sliced; a fed message and
    its feeders get the rounds of the network message among them."""
    n = int(plan.copies.shape[0])
    k = plan.slice_copies
    if k <= 0:
        return np.ones(n, dtype=np.int64)
    rounds = np.minimum(-(-plan.copies // k), MAX_SLICES).astype(np.int64)
    src, dst = plan.feeds
    if src.size:
        src_net, dst_net = plan.pair[src] >= 0, plan.pair[dst] >= 0
        if (src_net == dst_net).any():
            raise ValueError("a sliced plan's feeds must join a network and an NVLink message")
        rounds[dst[src_net]] = rounds[src[src_net]]
        rounds[src[dst_net]] = rounds[dst[dst_net]]
    return rounds
