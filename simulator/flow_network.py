"""The fluid network of flow mode: active flows, their max-min rates and what links carried.

Flows move through the network at the max-min fair rates of the flows active at the time
(:func:`simulator.maxmin.max_min_rates` over their binding links,
:mod:`simulator.flow_paths`); rates are recomputed whenever the set of active flows changes
(a flow starts or finishes), and are constant in between.  A flow finishes when its bytes are
through; it *arrives* one path latency plus its pipeline fill later.

Links serve flows first come first served, as the DES's links serve messages: every flow
carries a *priority* (``add(..., priority=p)``, lower first: the flow mode engine numbers
the batches of flows in the order they start, :mod:`simulator.flow_engine`), and the flows of
one priority get the max-min fair rates of what the flows before them leave
(:func:`simulator.maxmin.priority_max_min_rates`; only the classes from the first one that
gained or lost flows are recomputed: :func:`simulator.maxmin.priority_max_min_rates_from`).
Background flows (``add(..., background=True)``: expert-weight migration) come after every
serving flow: the serving flows get their rates as if the background were absent, and the
background flows share what capacity they leave, max-min fairly.

Events are merged: a flow that would finish within the engine's time quantum of the current
event finishes with it (its last bytes leave at the same instant; its arrival keeps its own
finishing time), and progressive filling merges levels within ``tolerance``.

Per link (class representative) it counts every flow's bytes and chunks once (the same
counts the DES makes, chunks of ``chunk_bytes``): when the flow starts, or all the messages
of a phase at once when the phase is built (:meth:`FluidNet.count`).  When a flow finishes
it adds its *slowdown* (seconds beyond its uncontended transfer time) on every link it
crossed: the flow-level counterpart of the DES's queueing delay.  The load of every link
between events is recorded (where it changed) for utilisation over time, the finishing flows'
last bytes in the step they finish in, so a link's windows add up to its busy time (with
merged events a step may show a load up to the tolerance above capacity).
"""

from __future__ import annotations

import numpy as np

from simulator.cluster.share_units import add_units, share_units
from simulator.flow_paths import FlowPaths
from simulator.maxmin import priority_max_min_rates_from

FINISH_RTOL = 1e-12  # a flow within this relative time of the event has finished (rounding)
BACKGROUND = np.iinfo(np.int64).max  # the priority of background flows: after all others
NO_CHANGE = BACKGROUND + 1  # no class changed (a Python int above every priority)


class _Entries:
    """(flow, link, share, binding) of the active flows' links, kept as flows come and go;
    the binding ones (the links that can limit a rate, :mod:`simulator.flow_paths`) are kept
    as their own arrays too, in the same order."""

    def __init__(self) -> None:
        self.flow = np.zeros(0, dtype=np.int64)
        self.link = np.zeros(0, dtype=np.int64)
        self.share = np.zeros(0)
        self.binding = np.zeros(0, dtype=bool)
        self.b_flow, self.b_link, self.b_share = self.flow, self.link, self.share

    def add(self, first_flow: int, row: np.ndarray, link: np.ndarray, share: np.ndarray,
            binding: np.ndarray) -> None:
        flow = row + first_flow
        self.flow = np.concatenate([self.flow, flow])
        self.link = np.concatenate([self.link, link])
        self.share = np.concatenate([self.share, share])
        self.binding = np.concatenate([self.binding, binding])
        self.b_flow = np.concatenate([self.b_flow, flow[binding]])
        self.b_link = np.concatenate([self.b_link, link[binding]])
        self.b_share = np.concatenate([self.b_share, share[binding]])

    def keep(self, keep_flow: np.ndarray) -> None:
        """Drop the entries of flows not kept; renumber the rest."""
        new_id = np.cumsum(keep_flow) - 1
        k = keep_flow[self.flow]
        self.flow = new_id[self.flow[k]]
        self.link, self.share, self.binding = self.link[k], self.share[k], self.binding[k]
        b = self.binding
        self.b_flow, self.b_link, self.b_share = self.flow[b], self.link[b], self.share[b]


class FluidNet:
    """Active flows and link counters (module docstring)."""

    def __init__(
        self, paths: FlowPaths, num_links: int, chunk_bytes: int, tolerance: float
    ) -> None:
        self.paths = paths
        self.capacity_bytes_per_s = paths.link_bandwidth_bytes_per_s
        self.chunk = chunk_bytes
        self.tolerance = tolerance
        self.num_links = num_links
        # per active flow: (path, owner, message, priority) and (bytes, start time); priority
        # lower first, BACKGROUND: background flows
        self._ids = np.zeros((0, 4), dtype=np.int64)
        self._sizes = np.zeros((0, 2))
        self.rem, self.rate = np.zeros(0), np.zeros(0)
        self.priority = np.zeros(0, dtype=np.int64)
        self.entries = _Entries()
        self._changed_from = NO_CHANGE  # the first priority class that gained or lost flows
        self.link_bytes = np.zeros(num_links)
        # the same bytes exactly, in units of 1/denominator (simulator.cluster.share_units)
        self.denominator = paths.multipath.share_denominator
        self.link_units = np.zeros(num_links, dtype=np.int64 if self.denominator else np.float64)
        self.link_chunks = np.zeros(num_links)
        self.queue_sum_s = np.zeros(num_links)
        self.queue_max_s = np.zeros(num_links)
        self._load = np.zeros(num_links)  # fraction of capacity in use, per link
        self.load_link: list[np.ndarray] = []
        self.load_time: list[float] = []  # one per record, for every link of load_link's
        self.load_frac: list[np.ndarray] = []
        self.rate_updates = 0

    @property
    def active(self) -> int:
        return int(self.rem.shape[0])

    def _chunks(self, nbytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunks per message and the size of its last chunk."""
        n = -(-nbytes // self.chunk)
        return n, nbytes - (n - 1) * self.chunk

    def count(self, path: np.ndarray, nbytes: np.ndarray) -> None:
        """Count the bytes and chunks of messages on every link of their paths (exactly: in
        whole share units, :mod:`simulator.cluster.share_units`)."""
        if path.size == 0:
            return
        row, link, share = self.paths.all.gather(path)
        self.link_bytes += np.bincount(link, weights=nbytes[row] * share,
                                       minlength=self.num_links)
        if self.denominator is None:
            self.link_units += np.bincount(link, weights=nbytes[row] * share,
                                           minlength=self.num_links)
        else:  # whole units: their sum is exact in float64 (below 2**53 per call)
            units = nbytes[row] * share_units(share, self.denominator)
            self.link_units = add_units(self.link_units, np.rint(np.bincount(
                link, weights=units, minlength=self.num_links)).astype(np.int64))
        n, _ = self._chunks(nbytes)
        self.link_chunks += np.bincount(link, weights=n[row], minlength=self.num_links)

    def add(
        self, path: np.ndarray, nbytes: np.ndarray, owner: int, msg: np.ndarray, now: float,
        priority: int = 0, background: bool = False, counted: bool = False,
    ) -> None:
        """Start flows (one per message) at ``now``; count their bytes and chunks unless
        ``counted`` (the caller counted them already, e.g. a phase all its messages at once).
        ``priority``: lower is served first; ``background``: after all serving flows (module
        docstring)."""
        if path.size == 0:
            return
        first = self.active
        self.entries.add(first, *self.paths.all.gather_binding(path))
        if not counted:
            self.count(path, nbytes)
        n = path.size
        p = BACKGROUND if background else priority
        ids = np.empty((n, 4), dtype=np.int64)
        ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3] = path, owner, msg, p
        sizes = np.empty((n, 2))
        sizes[:, 0], sizes[:, 1] = nbytes, now
        self._ids = np.concatenate([self._ids, ids])
        self._sizes = np.concatenate([self._sizes, sizes])
        self.rem = np.concatenate([self.rem, sizes[:, 0]])
        self.rate = np.concatenate([self.rate, np.zeros(n)])
        self.priority = self._ids[:, 3]
        self._changed_from = min(self._changed_from, p)

    def update_rates(self, now: float) -> None:
        """Max-min rates of the active flows (when the set of flows changed)."""
        if self._changed_from == NO_CHANGE:
            return
        first, self._changed_from = self._changed_from, NO_CHANGE
        self.rate_updates += 1
        e = self.entries
        self.rate = priority_max_min_rates_from(
            e.b_flow, e.b_link, e.b_share, self.capacity_bytes_per_s, self.active,
            self.priority, self.rate, first, self.tolerance)

    def _record(self, now: float, rate: np.ndarray) -> None:
        """The links' loads from ``now`` on (where they changed)."""
        a = self.entries
        load = np.bincount(a.link, weights=a.share * rate[a.flow], minlength=self.num_links)
        load = load / self.capacity_bytes_per_s
        changed = np.flatnonzero(load != self._load)
        if changed.size:
            self.load_link.append(changed)
            self.load_time.append(now)
            self.load_frac.append(load[changed])
            self._load = load

    def finish_times(self, now: float) -> np.ndarray:
        """When every active flow finishes at the current rates."""
        out = np.full(self.rem.shape, np.inf)  # a background flow may stand still (rate 0)
        np.divide(np.maximum(self.rem, 0.0), self.rate, out=out, where=self.rate > 0)
        return now + out

    def complete(
        self, now: float, t_proc: float, until: float, t_fin: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Move the flows on from ``now`` to ``t_proc`` and finish those due by ``until``
        (module docstring): (owner, message, arrival time, duration) of each, removed from
        the active set.  ``t_fin``: :meth:`finish_times` at ``now``."""
        z = np.zeros(0, dtype=np.int64)
        if self.active == 0:
            if t_proc > now:
                self._record(now, self.rate)
            return z, z, np.zeros(0), np.zeros(0)
        done = t_fin <= until + FINISH_RTOL * abs(until)
        if t_proc > now:
            # what each flow sends until t_proc: the finishing ones all they have left, so the
            # recorded loads carry every byte
            moved = np.where(done, np.maximum(self.rem, 0.0), self.rate * (t_proc - now))
            self._record(now, moved / (t_proc - now))
            self.rem = self.rem - moved
        if not done.any():
            return z, z, np.zeros(0), np.zeros(0)
        ids, sizes = self._ids[done], self._sizes[done]
        path, nbytes, start, t_end = ids[:, 0], sizes[:, 0], sizes[:, 1], t_fin[done]
        took = t_end - start
        slow = np.maximum(took - nbytes * self.paths.alone_s_per_byte[path], 0.0)
        n, last = self._chunks(nbytes.astype(np.int64))
        a = self.entries
        on = done[a.flow]
        fid = np.cumsum(done) - 1
        row, link = fid[a.flow[on]], a.link[on]
        self.queue_sum_s += np.bincount(link, weights=(slow * n)[row], minlength=self.num_links)
        np.maximum.at(self.queue_max_s, link, slow[row])
        arrival = t_end + self.paths.latency_s[path] + last * self.paths.pipe_s_per_byte[path]
        out = (ids[:, 1], ids[:, 2], arrival, arrival - start)
        self._changed_from = min(self._changed_from, int(ids[:, 3].min()))
        keep = ~done
        self._ids, self._sizes = self._ids[keep], self._sizes[keep]
        self.rem, self.rate = self.rem[keep], self.rate[keep]
        self.priority = self._ids[:, 3]
        a.keep(keep)
        return out

    def load_records(self, end_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The recorded loads (link, from time, fraction of capacity), every link back to 0
        at ``end_s``."""
        idle = np.flatnonzero(self._load > 0)
        times = np.repeat(np.array(self.load_time, dtype=np.float64),
                          [lk.size for lk in self.load_link])
        return (np.concatenate([np.zeros(0, dtype=np.int64), *self.load_link, idle]),
                np.concatenate([times, np.full(idle.size, end_s)]),
                np.concatenate([np.zeros(0), *self.load_frac, np.zeros(idle.size)]))
