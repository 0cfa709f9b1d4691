"""Replays split by micro-batch over a Dask cluster (the one sweeps use).

Micro-batches of an analytic replay are independent: each is counted on a worker
(:func:`simulator.analytic.count_microbatch`) and the driver sums the parts in micro-batch
order (:func:`simulator.analytic.combine_parts`), exactly as a serial run does, so the result
is identical whatever ran where.  The route table and the layout travel to every worker once;
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
from simulator.traffic_config import TrafficConfig
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
