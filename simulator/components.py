"""SimPy components: one direction of a link, and a GPU's expert compute.

A link direction is a FIFO server in the manner of SimPy's ``Cable`` example.  Messages are
served in the order their first chunk reaches the link (ties: SimPy's insertion order); a
message's chunks follow one another as they arrive (cut-through pipelining), each occupying
the link for ``nbytes / bandwidth`` and reaching the far end one latency after it finished:

    start_j  = max(arrival_j, finish_{j-1})      (finish_0: when the link frees up)
    finish_j = start_j + size_j / bandwidth,     far-end arrival_j = finish_j + latency

A message is reserved in one step when its first chunk arrives, so the link costs one event
per message and hop rather than per chunk.  A *uniform train* (chunks 1..n-1 of c bytes
arriving every s seconds from a, the last of r bytes at z) is served in closed form.  When the
link is at least as slow as the train's spacing (s <= c / bandwidth) the chunks go back to
back from max(a, free), exactly as above.  When the link is faster than the train (a faster
hop after a slower one, or a share of a sprayed message) the chunks would leave gaps that a
packet-switched link fills with other messages' packets; the link therefore books the train's
total work back to back from max(a, free) (work-conserving: the next message may start when
that work is done), while the train itself leaves no earlier than its chunks arrive (first
chunk at max(a, free) + c / bandwidth, last at max(z + r / bandwidth, end of the work)).
Trains split over several link classes in one hop use the chunk-by-chunk recurrence
(:meth:`LinkDirection.reserve`).
Queueing delay is counted per chunk (start_j - arrival_j).  Busy periods (maximal stretches
without idle time) are logged for utilisation over time.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

import simpy


class Wakeup:
    """A pre-triggered event for :meth:`simpy.Environment.schedule` (public API).

    ``Environment.step`` only reads an event's ``callbacks`` and ``_ok``; scheduling a Wakeup
    is the cheap equivalent of ``env.timeout(delay).callbacks.append(fn)`` for the replay's
    hot path (one event per message and hop), and a message reuses its Wakeup hop after hop.
    """

    __slots__ = ("callbacks", "_ok")

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.callbacks = [fn]
        self._ok = True


class BusyLog:
    """Busy periods of every link direction: (link_dir, start_s, end_s), non-overlapping."""

    __slots__ = ("link", "start", "end")

    def __init__(self) -> None:
        self.link = array("i")
        self.start = array("d")
        self.end = array("d")


class LinkDirection:
    """One direction of a full-duplex link, with its byte and time counters.

    ``busy_from_s`` is the start of the current busy period, which ends at ``free_at_s``; a
    period is written to the log when a later chunk finds the link idle (and by :meth:`flush`).
    """

    __slots__ = (
        "env", "index", "bandwidth_bytes_per_s", "latency_s", "free_at_s", "busy_from_s", "units",
        "busy_s",
        "chunks", "queue_sum_s", "queue_max_s", "log",
    )

    def __init__(
        self, env: simpy.Environment, index: int, bandwidth_bytes_per_s: float, latency_s: float,
        log: BusyLog,
    ) -> None:
        self.env = env
        self.index = index
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.latency_s = latency_s
        self.free_at_s = 0.0
        self.busy_from_s = -1.0  # no busy period yet
        # bytes in units of 1/(share denominator): a split hop carries fractional shares of a
        # message's bytes, counted exactly by the trains (simulator.cluster.share_units)
        self.units: float = 0
        self.busy_s = 0.0
        self.chunks = 0
        self.queue_sum_s = 0.0
        self.queue_max_s = 0.0
        self.log = log

    def _idle_until(self, t: float) -> None:
        """The link was idle from ``free_at_s`` to ``t`` (> free_at_s): close the busy period."""
        if self.busy_from_s >= 0.0:
            log = self.log
            log.link.append(self.index)
            log.start.append(self.busy_from_s)
            log.end.append(self.free_at_s)
        self.busy_from_s = t

    def flush(self) -> None:
        """Write the open busy period to the log (after the run)."""
        if self.busy_from_s >= 0.0:
            self._idle_until(-1.0)

    def reserve_uniform(
        self, a: float, s: float, n: int, z: float, c: float, r: float
    ) -> tuple[float, float, float]:
        """Serve a uniform train in closed form (a train slower than the link: see
        :meth:`_reserve_fast`).

        Chunk j < n (c bytes) arrives at a + (j-1)s, chunk n (r bytes) at z.  With
        d = c / bandwidth >= s and S = max(a, free): chunk j < n starts at S + (j-1)d (its wait
        is S - a + (j-1)(d - s)), the last starts at max(z, S + (n-1)d).  Returns the far-end
        train: (first arrival, spacing d, last arrival).
        """
        bw = self.bandwidth_bytes_per_s
        d = c / bw
        if n > 1 and s > d:
            return self._reserve_fast(a, s, n, z, c, r)
        free = self.free_at_s
        if a > free or self.busy_from_s < 0.0:  # idle: close the busy period (inlined)
            if self.busy_from_s >= 0.0:
                log = self.log
                log.link.append(self.index)
                log.start.append(self.busy_from_s)
                log.end.append(free)
            self.busy_from_s = a
            start = a
        else:
            start = free
        m = n - 1
        if m:
            fin_prev = start + m * d
            w1 = start - a
            qsum = m * w1 + (d - s) * m * (m - 1) / 2
            qmax = w1 + (m - 1) * (d - s)
            if z > fin_prev:  # the last chunk finds the link idle
                self.free_at_s = fin_prev
                self._idle_until(z)
                st_n = z
            else:
                st_n = fin_prev
            wn = st_n - z
            qsum += wn
            if wn > qmax:
                qmax = wn
            first = start + d
        else:
            st_n = start
            qsum = qmax = start - a
            first = -1.0
        fin = st_n + r / bw
        self.free_at_s = fin
        self._count(qsum, qmax, n, m * d + r / bw)
        lat = self.latency_s
        return (first if m else fin) + lat, d, fin + lat

    def _count(self, qsum: float, qmax: float, chunks: int, busy: float) -> None:
        self.queue_sum_s += qsum
        if qmax > self.queue_max_s:
            self.queue_max_s = qmax
        self.busy_s += busy
        self.chunks += chunks

    def _reserve_fast(
        self, a: float, s: float, n: int, z: float, c: float, r: float
    ) -> tuple[float, float, float]:
        """A train slower than the link (module docstring): its work is booked back to back
        from max(a, free); chunk j waits max(0, w1 - j (s - d)) behind earlier work."""
        bw = self.bandwidth_bytes_per_s
        d = c / bw
        free = self.free_at_s
        if a > free or self.busy_from_s < 0.0:
            self._idle_until(a)
            start = a
        else:
            start = free
        m = n - 1
        w1 = start - a
        k = min(m, int(w1 / (s - d)) + 1) if w1 > 0 else 0  # chunks that wait
        qsum = k * w1 - (s - d) * k * (k - 1) / 2
        wn = max(0.0, start + m * d - z)
        work_end = start + m * d + r / bw
        self.free_at_s = work_end
        self._count(qsum + wn, max(w1, wn), n, m * d + r / bw)
        lat = self.latency_s
        # packets of concurrent messages interleave: the first chunk is not held back behind
        # the work booked before it; the last leaves when all that work is done
        first = a + d + lat
        last = max(z + r / bw, work_end) + lat
        return first, (last - first) / m, last

    def reserve(self, arrivals: list[float], sizes: list[float]) -> list[float]:
        """Serve one message's chunks chunk by chunk (arrival times non-decreasing, the first
        is now).  Returns the times the chunks reach the far end.
        """
        bw = self.bandwidth_bytes_per_s
        lat = self.latency_s
        fin = self.free_at_s
        qsum = 0.0
        qmax = self.queue_max_s
        busy = 0.0
        out = []
        for a, s in zip(arrivals, sizes, strict=True):
            if a > fin or self.busy_from_s < 0.0:
                self.free_at_s = fin
                self._idle_until(a)
                st = a
            else:
                st = fin
                w = fin - a
                qsum += w
                if w > qmax:
                    qmax = w
            d = s / bw
            busy += d
            fin = st + d
            out.append(fin + lat)
        self.free_at_s = fin
        self.queue_sum_s += qsum
        self.queue_max_s = qmax
        self.busy_s += busy
        self.chunks += len(sizes)
        return out


class Gpu:
    """Expert compute on one GPU: FIFO, one batch of routes at a time."""

    __slots__ = ("env", "free_at_s", "busy_s")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.free_at_s = 0.0
        self.busy_s = 0.0

    def compute(self, duration_s: float, on_done: Callable[[simpy.Event], None]) -> float:
        """Queue ``duration_s`` of work; ``on_done`` fires when it ends.  Returns its start."""
        now = self.env.now
        start = now if now > self.free_at_s else self.free_at_s
        self.free_at_s = start + duration_s
        self.busy_s += duration_s
        ev = self.env.timeout(self.free_at_s - now)
        ev.callbacks.append(on_done)
        return start
