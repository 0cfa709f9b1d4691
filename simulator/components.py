"""SimPy components: one direction of a link, and a GPU's expert compute.

A link direction is a FIFO server in the manner of SimPy's ``Cable`` example: a chunk that
reaches it at time t starts serialising at max(t, when the previous chunk finished), occupies
the link for nbytes / bandwidth, and reaches the far end one latency after it finished.
Because chunks reach a link through SimPy's event queue in time order (ties in insertion
order), reserving at arrival is exactly FIFO service.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy


class LinkDirection:
    """One direction of a full-duplex link, with its byte and time counters."""

    __slots__ = (
        "env", "bandwidth", "latency", "free_at", "nbytes", "busy_s", "chunks",
        "queue_sum_s", "queue_max_s",
    )

    def __init__(self, env: simpy.Environment, bandwidth: float, latency: float) -> None:
        self.env = env
        self.bandwidth = bandwidth
        self.latency = latency
        self.free_at = 0.0
        self.nbytes = 0
        self.busy_s = 0.0
        self.chunks = 0
        self.queue_sum_s = 0.0
        self.queue_max_s = 0.0

    def send(self, nbytes: int, on_arrival: Callable[[simpy.Event], None]) -> None:
        """Serialise ``nbytes`` now (FIFO) and call ``on_arrival`` when they reach the far end."""
        now = self.env.now
        start = now if now > self.free_at else self.free_at
        duration = nbytes / self.bandwidth
        self.free_at = start + duration
        wait = start - now
        self.queue_sum_s += wait
        if wait > self.queue_max_s:
            self.queue_max_s = wait
        self.nbytes += nbytes
        self.busy_s += duration
        self.chunks += 1
        ev = self.env.timeout(self.free_at + self.latency - now)
        ev.callbacks.append(on_arrival)


class Gpu:
    """Expert compute on one GPU: FIFO, one batch of routes at a time."""

    __slots__ = ("env", "free_at", "busy_s")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.free_at = 0.0
        self.busy_s = 0.0

    def compute(self, duration_s: float, on_done: Callable[[simpy.Event], None]) -> None:
        now = self.env.now
        start = now if now > self.free_at else self.free_at
        self.free_at = start + duration_s
        self.busy_s += duration_s
        ev = self.env.timeout(self.free_at - now)
        ev.callbacks.append(on_done)
