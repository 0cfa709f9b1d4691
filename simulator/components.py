"""SimPy components: one direction of a link, and a GPU's expert compute.

A link direction is a FIFO server in the manner of SimPy's ``Cable`` example.  Messages are
served in the order their first chunk reaches the link (ties: SimPy's insertion order); a
message's chunks follow one another as they arrive (cut-through pipelining), each occupying
the link for ``nbytes / bandwidth`` and reaching the far end one latency after it finished:

    start_j  = max(arrival_j, finish_{j-1})      (finish_0: when the link frees up)
    finish_j = start_j + size_j / bandwidth,     far-end arrival_j = finish_j + latency

A message is reserved in one step when its first chunk arrives, so the link costs one event
per message and hop rather than per chunk.  A *uniform train* (chunks 1..n-1 of c bytes
arriving every s seconds from a, the last of r bytes at z) is served in closed form when the
link is at least as slow as the train's spacing (s <= c / bandwidth: the chunks go back to
back from max(a, free)), which covers a message's first hop and equal-bandwidth paths; any
other train falls back to the chunk-by-chunk recurrence (:meth:`LinkDirection.reserve`).  Queueing delay is counted per chunk
(start_j - arrival_j).  Busy periods are logged as contiguous segments for utilisation over
time.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import simpy


class BusyLog:
    """Contiguous busy segments of every link direction: (link_dir, start_s, end_s)."""

    __slots__ = ("link", "start", "end")

    def __init__(self) -> None:
        self.link = array("i")
        self.start = array("d")
        self.end = array("d")


class LinkDirection:
    """One direction of a full-duplex link, with its byte and time counters."""

    __slots__ = (
        "env", "index", "bandwidth", "latency", "free_at", "nbytes", "busy_s", "chunks",
        "queue_sum_s", "queue_max_s", "log",
    )

    def __init__(
        self, env: simpy.Environment, index: int, bandwidth: float, latency: float, log: BusyLog
    ) -> None:
        self.env = env
        self.index = index
        self.bandwidth = bandwidth
        self.latency = latency
        self.free_at = 0.0
        self.nbytes = 0
        self.busy_s = 0.0
        self.chunks = 0
        self.queue_sum_s = 0.0
        self.queue_max_s = 0.0
        self.log = log

    def reserve_uniform(
        self, a: float, s: float, n: int, z: float, c: int, r: int
    ) -> tuple[float, float, float] | None:
        """Serve a uniform train in closed form, or return None (chunks would not go back to
        back: the caller falls back to :meth:`reserve`).

        Chunk j < n (c bytes) arrives at a + (j-1)s, chunk n (r bytes) at z.  With
        d = c / bandwidth >= s and S = max(a, free): chunk j < n starts at S + (j-1)d (its wait
        is S - a + (j-1)(d - s)), the last starts at max(z, S + (n-1)d).  Returns the far-end
        train: (first arrival, spacing d, last arrival).
        """
        bw = self.bandwidth
        d = c / bw
        if n > 1 and s > d:
            return None
        free = self.free_at
        start = a if a > free else free
        w1 = start - a
        m = n - 1
        fin_prev = start + m * d
        st_n = z if z > fin_prev else fin_prev
        wn = st_n - z
        qsum = m * w1 + (d - s) * m * (m - 1) / 2 + wn
        qmax = w1 + (m - 1) * (d - s) if m else wn
        if wn > qmax:
            qmax = wn
        log = self.log
        seg = start
        if m and st_n > fin_prev:
            log.link.append(self.index)
            log.start.append(start)
            log.end.append(fin_prev)
            seg = st_n
        fin = st_n + r / bw
        log.link.append(self.index)
        log.start.append(seg)
        log.end.append(fin)
        self.free_at = fin
        self.queue_sum_s += qsum
        if qmax > self.queue_max_s:
            self.queue_max_s = qmax
        self.nbytes += m * c + r
        self.busy_s += m * d + r / bw
        self.chunks += n
        lat = self.latency
        first = (start + d if m else fin) + lat
        return first, d, fin + lat

    def reserve(self, arrivals: list[float], sizes: list[int]) -> list[float]:
        """Serve one message's chunks (arrival times non-decreasing, the first is now).

        Returns the times the chunks reach the far end.
        """
        bw = self.bandwidth
        lat = self.latency
        fin = self.free_at
        seg_start = -1.0
        qsum = 0.0
        qmax = self.queue_max_s
        busy = 0.0
        out = []
        log = self.log
        for a, s in zip(arrivals, sizes):
            if a > fin:
                if seg_start >= 0.0:
                    log.link.append(self.index)
                    log.start.append(seg_start)
                    log.end.append(fin)
                seg_start = a
                st = a
            else:
                if seg_start < 0.0:
                    seg_start = fin
                st = fin
                w = fin - a
                qsum += w
                if w > qmax:
                    qmax = w
            d = s / bw
            busy += d
            fin = st + d
            out.append(fin + lat)
        log.link.append(self.index)
        log.start.append(seg_start)
        log.end.append(fin)
        self.free_at = fin
        self.queue_sum_s += qsum
        self.queue_max_s = qmax
        self.nbytes += sum(sizes)
        self.busy_s += busy
        self.chunks += len(sizes)
        return out


class Gpu:
    """Expert compute on one GPU: FIFO, one batch of routes at a time."""

    __slots__ = ("env", "free_at", "busy_s")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.free_at = 0.0
        self.busy_s = 0.0

    def compute(self, duration_s: float, on_done: Callable[[simpy.Event], None]) -> float:
        """Queue ``duration_s`` of work; ``on_done`` fires when it ends.  Returns its start."""
        now = self.env.now
        start = now if now > self.free_at else self.free_at
        self.free_at = start + duration_s
        self.busy_s += duration_s
        ev = self.env.timeout(self.free_at - now)
        ev.callbacks.append(on_done)
        return start
