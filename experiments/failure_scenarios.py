"""Single-failure scenarios of a cluster: the failed fabric, its routes, how GPUs and token
origins carry over, and the expected-cost (robust) placement arrays over a failure set.

The rules, used by ``study failures``, ``place --repair`` and ``place --robust``:

* a scenario is the healthy cluster with one element failed (:mod:`simulator.cluster.failures`);
  a failure that cuts GPUs off is a scenario that cannot be replayed (its reason is kept);
* GPUs carry over by name (``index_map``); tokens that started on a failed server's GPUs are
  re-dealt over the surviving GPUs in turn (the load balancer sends their requests elsewhere),
  the others keep their GPU;
* the robust arrays are the mean of the placement arrays' distance and wire-time matrices over
  the scenarios that keep every GPU: a placement cost linear in them (hops, wire time) is then
  the expected cost over the failure set, uniform over its scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulator.cluster.arrays import placement_arrays
from simulator.cluster.failures import (
    Element,
    WhatIf,
    apply_whatif,
    gpu_index_map,
    single_failures,
)
from simulator.cluster.paths import RouteTable, build_route_table
from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError
from traces.trace import RoutingTrace

# The arrays a placement cost can be averaged over (costs linear in them).
LINEAR_ARRAYS = ("distance", "pair_seconds_per_byte")


@dataclass(frozen=True, eq=False)
class Scenario:
    """The healthy fabric (``element`` None) or one failure; ``routes`` None when the failure
    cuts GPUs off (``reason`` says which)."""

    element: Element | None
    routes: RouteTable | None
    index_map: np.ndarray  # new index of every healthy GPU, -1 where it failed
    reason: str = ""

    @property
    def label(self) -> str:
        return "healthy" if self.element is None else self.element.text

    @property
    def keeps_gpus(self) -> bool:
        return bool((self.index_map >= 0).all())


def scenarios(cluster: ClusterSpec, failure_class: str,
              healthy: RouteTable | None = None) -> list[Scenario]:
    """The healthy fabric, then every single failure of ``failure_class`` in cluster order."""
    healthy = healthy or build_route_table(cluster)
    out = [Scenario(None, healthy, np.arange(cluster.num_gpus))]
    for element in single_failures(cluster, failure_class):
        try:
            failed = apply_whatif(cluster, WhatIf((element,)), where="failure").cluster
        except InputError as exc:
            out.append(Scenario(element, None, np.full(cluster.num_gpus, -1),
                                str(exc).split(": ", 1)[-1]))
            continue
        out.append(Scenario(element, build_route_table(failed), gpu_index_map(cluster, failed)))
    return out


def remap_origins(trace: RoutingTrace, index_map: np.ndarray) -> RoutingTrace:
    """The trace on the surviving GPUs (module docstring); unchanged when every GPU survives."""
    if (index_map >= 0).all() or trace.origin_gpu is None:
        return trace
    survivors = int((index_map >= 0).sum())
    o = index_map[trace.origin_gpu.astype(np.int64)]
    lost = o < 0
    o[lost] = np.arange(int(lost.sum())) % survivors
    return replace(trace, origin_gpu=o.astype(np.int32))


def robust_arrays(scenario_list: list[Scenario]) -> dict[str, np.ndarray]:
    """Placement arrays of the healthy fabric with distance and wire time averaged over the
    failure scenarios that keep every GPU (module docstring)."""
    healthy = scenario_list[0]
    assert healthy.routes is not None and healthy.element is None
    kept = [s for s in scenario_list[1:] if s.routes is not None and s.keeps_gpus]
    if not kept:
        raise InputError(
            "robust placement: no failure of this class keeps every GPU reachable (server"
            " failures remove GPUs: their expected cost is not one placement problem)"
        )
    out = placement_arrays(healthy.routes)
    arrays = [placement_arrays(s.routes) for s in kept if s.routes is not None]
    for name in LINEAR_ARRAYS:
        out[name] = np.mean([a[name] for a in arrays], axis=0)
    return out
