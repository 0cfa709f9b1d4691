"""Replays split by micro-batch over a Dask cluster (the one sweeps use).

Micro-batches of an analytic replay are independent: each is counted on a worker
(:func:`simulator.analytic.count_microbatch`) and the driver sums the parts in micro-batch
order (:func:`simulator.analytic.combine_parts`), exactly as a serial run does, so the result
is identical whatever ran where.  So are those of a flow-mode replay with one micro-batch in
flight: each starts on an idle network and GPUs, is replayed on a worker from time 0
(:func:`simulator.flow_engine.flow_microbatch`) and the driver shifts and adds the parts as
the serial run does (:mod:`simulator.flow_parts`).  With more in flight micro-batches overlap
in simulated time and share links, so such a replay is refused (it is not independent by
micro-batch), as is the DES.  The route table and the layout travel to every worker once;
the driver reads the trace as a stream and keeps at most ``window`` micro-batches in flight or
waiting for an earlier one, so memory stays bounded on any trace length.

:func:`map_in_order` is the generic part: any per-micro-batch function whose parts the caller
folds in order can be split the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from simulator.analytic import AnalyticResult, as_replicas, combine_parts, count_microbatch
from simulator.cluster.paths import RouteTable
from simulator.config import SimConfig
from simulator.engine import SimResult
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError
from traces.trace import RoutingTrace

IN_FLIGHT_PER_WORKER = 2


def map_in_order(
    client: Any,
    fn: Callable[..., Any],
    blocks: Iterable[RoutingTrace],
    shared: tuple[Any, ...],
    on_done: Callable[[RoutingTrace | None, Any], None] = lambda block, part: None,
    window: int | None = None,
) -> Iterator[Any]:
    """``fn(mb, block, *shared)`` for every block on the cluster, yielded in block order.

    ``shared`` values are sent to every worker once.  ``on_done(None, part)`` is called as
    each part arrives (e.g. to advance a progress bar).
    """
    from dask.distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = window or IN_FLIGHT_PER_WORKER * workers
    sent = [client.scatter(x, broadcast=True, hash=False) for x in shared]
    stream = enumerate(blocks)
    pending = as_completed()
    ready: dict[int, Any] = {}
    submitted = 0
    due = 0

    def submit_more() -> None:
        nonlocal submitted
        while submitted - due < window:
            item = next(stream, None)
            if item is None:
                return
            mb, block = item
            pending.add(client.submit(fn, mb, block, *sent, pure=False))
            submitted += 1

    submit_more()
    for fut in pending:
        part = fut.result()
        fut.release()
        ready[int(part.microbatch)] = part
        on_done(None, part)
        while due in ready:
            yield ready.pop(due)
            due += 1
        submit_more()
    for x in sent:
        x.release()


def count_traffic_split(
    client: Any,
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: TrafficConfig,
    on_done: Callable[[RoutingTrace | None, Any], None] = lambda block, part: None,
) -> AnalyticResult:
    """:func:`simulator.analytic.count_traffic` with each micro-batch counted on ``client``'s
    workers; the result is identical to the serial one."""
    parts = map_in_order(client, count_microbatch, blocks,
                         (routes, as_replicas(expert_gpus), config), on_done)
    return combine_parts(parts, routes, config)


def flow_split_problem(config: SimConfig) -> str | None:
    """Why a flow-mode replay of ``config`` cannot be split by micro-batch (None: it can)."""
    if config.inflight_microbatches != 1:
        return (f"{config.inflight_microbatches} micro-batches in flight overlap in simulated"
                " time and share links, so they are not independent; give --inflight 1 to"
                " split a flow replay")
    return None


def replay_flow_split(
    client: Any,
    blocks: Iterable[RoutingTrace],
    routes: RouteTable,
    expert_gpus: np.ndarray,
    config: SimConfig,
    on_done: Callable[[RoutingTrace | None, Any], None] = lambda block, part: None,
) -> SimResult:
    """:func:`simulator.flow_engine.simulate_flow` (one micro-batch in flight) with each
    micro-batch replayed on ``client``'s workers; the result is identical to the serial one."""
    from simulator.engine import replay_stream
    from simulator.flow_engine import flow_microbatch, flow_result

    problem = flow_split_problem(config)
    if problem:
        raise InputError(f"flow replay split over Dask: {problem}")
    gpus = as_replicas(expert_gpus)
    parts = map_in_order(client, flow_microbatch, replay_stream(blocks, routes, gpus, config),
                         (routes, gpus, config), on_done)
    return flow_result(parts, routes, config)
