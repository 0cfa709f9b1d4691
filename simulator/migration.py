"""Expert-weight migration as traffic in the replay: every move is a flow on the serving links.

A rebalance moves expert copies (``placement.migration.MigrationPlan``: from the nearest old
copy to the new GPU).  Each move's weight bytes travel the same path a message between those
two GPUs takes (the source GPU's link to its server node, the network route between their
endpoints, the destination's link from its server node; one of them when both GPUs share a
server), through the same :class:`~simulator.components.LinkDirection` objects as the serving
traffic, so migration and dispatch/combine messages queue for one another (FIFO per link).

Two ways to move (``--migration`` of ``moe-netsim rebalance``):

``stall``  (synchronous) serving stops; every move is one message of all its bytes, all moves
    start at once on the idle network, and the stall is the time until the last one has
    arrived, measured in the DES (:func:`stall_time_s`).  It is at least the busiest link's
    serialisation time (:func:`stall_lower_bound_s`): links carry the moves back to back, and
    store-and-forward over several hops and queueing add to it.
``async``  the moves run in the background while serving goes on (:class:`BackgroundMigration`,
    in flow mode :class:`FlowBackgroundMigration`):
    every source GPU sends its moves one after another as one low-priority stream with one
    piece of ``chunk_bytes`` in flight at a time (the next piece leaves when the previous one
    has arrived, as a copy engine working through a queue), so a serving message waits behind
    at most one piece per sending GPU on a link, and the streams share each link with the
    serving traffic piece by piece.  Serving uses the old layout until the last move has
    arrived, then the new one.  The latency hit of the micro-batches in flight and the time
    the migration takes are measured, not assumed.

    In flow mode (no chunks, no FIFO queues) each stream sends its moves one after another as
    whole flows of strict low priority: serving flows keep their max-min rates and the moves
    share what capacity serving leaves.  Serving therefore never waits behind a piece of
    weights (the DES's up to one piece per sender and link), and a stream is not held to one
    piece in flight: on an idle path it runs at the path's rate (7 chunk times for a 4-chunk
    move over 4 hops, 16 in the DES).  Flow mode's async latency is the old layout's (serving
    keeps its rates), a lower bound on the DES's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from simulator.cluster.paths import RouteTable
from simulator.config import SimConfig
from simulator.transfer import Path, _Train

Moves = tuple[np.ndarray, np.ndarray]  # (source GPU, destination GPU) per move


def move_path(run: Any, src: int, dst: int) -> Path:
    """The hops a message from GPU ``src`` to GPU ``dst`` takes in the replay ``run``."""
    if run.gpu_server[src] == run.gpu_server[dst]:
        return run.path(src, -1, dst)  # type: ignore[no-any-return]
    ep = run.endpoints
    pair = int(ep.gpu_endpoint[src]) * ep.count + int(ep.gpu_endpoint[dst])
    return run.path(src, pair, dst)  # type: ignore[no-any-return]


def migration_link_bytes(routes: RouteTable, moves: Moves, weight_bytes: float) -> np.ndarray:
    """Weight bytes per link direction (the analytic counter's routes), [2 x links]."""
    from simulator.analytic import pair_route_counts
    from simulator.traffic import PairList

    src, dst = (np.asarray(x, dtype=np.int64) for x in moves)
    g = routes.num_gpus
    keys, count = np.unique(src * g + dst, return_counts=True)  # sorted: the PairList order
    per_link = pair_route_counts(routes, PairList(keys // g, keys % g, count))
    return per_link.astype(np.float64) * weight_bytes


def stall_lower_bound_s(routes: RouteTable, per_link_bytes: np.ndarray) -> float:
    """The busiest link direction's time to carry its migration bytes back to back."""
    bw = np.repeat([lk.bandwidth_bytes_per_s for lk in routes.cluster.links], 2)
    return float((per_link_bytes / bw).max()) if per_link_bytes.size else 0.0


def _idle_run(routes: RouteTable, config: SimConfig | None) -> Any:
    """A replay state with no serving traffic (its links and paths)."""
    from simulator.engine import _Run

    return _Run(routes, np.zeros((1, 1, 1), dtype=np.int64), config or SimConfig(),
                simpy.Environment())


def stall_time_s(routes: RouteTable, moves: Moves, weight_bytes: float,
                 config: SimConfig | None = None) -> float:
    """DES-measured stall: every move one message, all started at 0 on the idle network; the
    time the last one arrives."""
    src, dst = moves
    if not len(src):
        return 0.0
    run = _idle_run(routes, config)
    arrived = [0.0]

    def done(_e: Any) -> None:
        arrived[0] = max(arrived[0], float(run.env.now))

    for s, d in zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), strict=True):
        _Train(run.env, move_path(run, s, d), _whole(weight_bytes), run.chunk, done)
    run.env.run()
    return arrived[0]


def background_time_s(routes: RouteTable, moves: Moves, weight_bytes: float,
                      config: SimConfig | None = None) -> float:
    """How long the ``async`` streams take on the idle network (no serving beside them)."""
    run = _idle_run(routes, config)
    bg = BackgroundMigration(moves, weight_bytes, run.expert_gpus)
    bg.start(run)
    run.env.run()
    return bg.done_s


def _whole(nbytes: float) -> int:
    return max(1, int(round(nbytes)))


class BackgroundMigration:
    """The moves of one rebalance as low-priority flows beside serving (module docstring).

    Pass :meth:`start` as ``background`` to :func:`simulator.engine.simulate`; after the run,
    ``done_s`` is when the last move arrived (the layout switched to ``new_expert_gpus`` then).
    """

    def __init__(self, moves: Moves, weight_bytes: float, new_expert_gpus: np.ndarray) -> None:
        self.src, self.dst = (np.asarray(x, dtype=np.int64) for x in moves)
        self.weight_bytes = _whole(weight_bytes)
        self.new_expert_gpus = np.asarray(new_expert_gpus, dtype=np.int64)
        if self.new_expert_gpus.ndim == 2:
            self.new_expert_gpus = self.new_expert_gpus[:, :, None]
        self.done_s = 0.0
        self._left = 0

    def start(self, run: Any) -> None:
        """Start every source GPU's stream at the replay's time 0."""
        senders = np.unique(self.src)
        self._left = len(senders)
        if not self._left:
            run.expert_gpus = self.new_expert_gpus
            return
        for s in senders.tolist():
            queue = [move_path(run, s, d) for d in self.dst[self.src == s].tolist()]
            self._send(run, queue, 0, self.weight_bytes)

    def _send(self, run: Any, queue: list[Path], k: int, left: int) -> None:
        """Send the next piece of move ``k`` of a stream (``left`` bytes of it to go)."""
        piece = min(left, run.chunk)

        def arrived(_e: Any) -> None:
            if left > piece:
                self._send(run, queue, k, left - piece)
            elif k + 1 < len(queue):
                self._send(run, queue, k + 1, self.weight_bytes)
            else:
                self._finished(run, float(run.env.now))

        _Train(run.env, queue[k], piece, run.chunk, arrived)

    def _finished(self, run: Any, now: float) -> None:
        self._left -= 1
        if self._left == 0:
            self.done_s = now
            run.expert_gpus = self.new_expert_gpus  # the next layers use the new copies


class FlowBackgroundMigration(BackgroundMigration):
    """The streams of :class:`BackgroundMigration` in flow mode (module docstring): pass
    :meth:`start` as ``background`` to :func:`simulator.flow_engine.simulate_flow`."""

    def start(self, run: Any) -> None:
        """Register as an owner of flows and start every source GPU's first move at 0."""
        self._senders = np.unique(self.src)
        self._left = len(self._senders)
        if not self._left:
            run.expert_gpus = self.new_expert_gpus
            return
        ep = run.multipath.endpoints
        gs = run.routes.cluster.gpu_server
        same = gs[self.src] == gs[self.dst]
        pair = np.where(same, -1, ep.gpu_endpoint[self.src] * ep.count
                        + ep.gpu_endpoint[self.dst])
        paths = run.paths.ids(self.src, pair, self.dst)
        order = np.argsort(self.src, kind="stable")  # each sender's moves in plan order
        self._queue = [paths[order][self.src[order] == s] for s in self._senders.tolist()]
        self._next = np.zeros(len(self._senders), dtype=np.int64)
        self._run = run
        self._slot = run.register(self)
        for i in range(len(self._senders)):
            self._send_move(i, 0.0)

    def _send_move(self, i: int, now: float) -> None:
        path = self._queue[i][self._next[i]: self._next[i] + 1]
        self._run.net.add(path, np.array([self.weight_bytes]), self._slot, np.array([i]), now,
                          background=True)
        self._next[i] += 1

    def arrived(self, senders: np.ndarray, now: float) -> None:
        """Moves have arrived: each sender's next move starts, or its stream is done."""
        for i in senders.tolist():
            if self._next[i] < len(self._queue[i]):
                self._send_move(i, now)
            else:
                self._finished(self._run, now)
        if self._left == 0:
            self._run.unregister(self._slot)


Background = Callable[[Any], None]
