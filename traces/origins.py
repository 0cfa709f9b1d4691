"""Origins applied: the origin GPU of every token under an origin model
(:mod:`traces.origin_models` defines and parses the models)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from traces.infra.errors import InputError
from traces.origin_models import DEFAULT_MODEL, ORIGIN_MODELS, OriginModel, check_cluster
from traces.trace import RoutingTrace

COVERAGE_WARNING_FRACTION = 0.5


class OriginAssigner:
    """Origin GPU of every token of a stream of blocks (counters carry across blocks)."""

    def __init__(self, model: OriginModel | None, gpu_server: np.ndarray,
                 where: str = "--origins") -> None:
        self.gpu_server = np.asarray(gpu_server, dtype=np.int64)
        num_servers = int(self.gpu_server.max()) + 1
        if model is not None:
            check_cluster(model, num_servers, where)
        self.model = model
        self.where = where
        self.num_gpus = len(self.gpu_server)
        sets = model.server_sets if model is not None else ()
        self.group_gpus = [np.flatnonzero(np.isin(self.gpu_server, s)) for s in sets]
        self.counters = np.zeros(max(1, len(sets)), dtype=np.int64)
        self.covered = np.zeros(self.num_gpus, dtype=bool)

    def _deal(self, group: np.ndarray, gpus_of: list[np.ndarray]) -> np.ndarray:
        out = np.empty(len(group), dtype=np.int64)
        for k, gpus in enumerate(gpus_of):
            sel = np.flatnonzero(group == k)
            out[sel] = gpus[(self.counters[k] + np.arange(len(sel))) % len(gpus)]
            self.counters[k] += len(sel)
        return out

    def __call__(self, block: RoutingTrace) -> np.ndarray:
        m = self.model
        n = block.num_tokens
        name = m.name if m is not None else ("recorded" if block.origin_gpu is not None
                                             else DEFAULT_MODEL)
        if name == "recorded":
            if block.origin_gpu is None or (n and block.origin_gpu.min() < 0):
                raise InputError(
                    f"{self.where} recorded: the trace records no origin_gpu for some tokens;"
                    f" choose a model ({', '.join(k for k in ORIGIN_MODELS if k != 'recorded')})"
                )
            o = block.origin_gpu.astype(np.int64)
            if n and o.max() >= self.num_gpus:
                raise InputError(
                    f"trace: origin_gpu {int(o.max())} is outside the cluster's GPUs"
                    f" 0..{self.num_gpus - 1}; choose an origin model with --origins"
                )
        elif name == "dp":
            o = self._deal(np.zeros(n, dtype=np.int64), [np.arange(self.num_gpus)])
        elif name == "seq":
            o = block.seq_id.astype(np.int64) % self.num_gpus
        elif name == "tenants":
            assert m is not None
            o = self._deal(block.seq_id.astype(np.int64) % len(self.group_gpus), self.group_gpus)
        else:  # pd
            assert m is not None
            decode = (block.position.astype(np.int64) >= m.prompt_tokens).astype(np.int64)
            o = self._deal(decode, self.group_gpus)
        self.covered[o] = True
        return o

    def warning(self) -> str | None:
        return coverage_warning(int(self.covered.sum()), self.num_gpus)


def coverage_warning(covered_gpus: int, num_gpus: int) -> str | None:
    """The warning when origins cover fewer than half of the cluster's GPUs, else None."""
    if covered_gpus >= COVERAGE_WARNING_FRACTION * num_gpus:
        return None
    return (
        f"warning: token origins cover {covered_gpus} of the cluster's {num_gpus} GPUs (fewer"
        " than half); the other GPUs send no tokens. Choose another origin model with"
        " --origins (docs/reference/origins.md) if that is not intended"
    )


def with_origins(blocks: Iterable[RoutingTrace], assigner: OriginAssigner
                 ) -> Iterator[RoutingTrace]:
    """The blocks with ``origin_gpu`` set by the assigner (in stream order)."""
    for block in blocks:
        yield replace(block, origin_gpu=assigner(block).astype(np.int32))


def apply_origins(trace: RoutingTrace, model: OriginModel | None, gpu_server: np.ndarray,
                  where: str = "--origins") -> RoutingTrace:
    """A whole trace with its origins set by ``model`` (None: recorded, else dp)."""
    assigner = OriginAssigner(model, gpu_server, where)
    return replace(trace, origin_gpu=assigner(trace).astype(np.int32))


def tenant_server_sets(num_servers: int, tenants: int) -> tuple[tuple[int, ...], ...]:
    """``tenants`` contiguous, near-equal blocks of the servers (earlier blocks get the rest)."""
    if not 1 <= tenants <= num_servers:
        raise InputError(f"cannot give {tenants} tenants their own of {num_servers} servers")
    bounds = np.linspace(0, num_servers, tenants + 1).round().astype(int)
    return tuple(tuple(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def servers_of_gpus(num_gpus: int, gpus_per_server: int, model: OriginModel | None = None,
                    where: str = "--gpus") -> np.ndarray:
    """Server of every GPU of a cluster known only by its size (GPUs numbered server-major).

    Models without server sets (dp, seq, recorded) need no servers: one server then holds all.
    """
    if num_gpus >= 1 and (model is None or not model.server_sets):
        return np.zeros(num_gpus, dtype=np.int64)
    if num_gpus < 1 or gpus_per_server < 1 or num_gpus % gpus_per_server:
        raise InputError(
            f"{where}: {num_gpus} GPUs do not split into servers of {gpus_per_server} GPUs"
        )
    return np.arange(num_gpus) // gpus_per_server


def resolve_origins(block: RoutingTrace, num_gpus: int) -> np.ndarray:
    """Origin GPU per token: recorded, or the block's tokens dealt round-robin (``dp``): the
    rule of the simulator, the analytic counter and the strategies' token sample."""
    if block.origin_gpu is not None:
        o = block.origin_gpu.astype(np.int64)
        if block.num_tokens and (o.min() < 0 or o.max() >= num_gpus):
            raise InputError(
                f"trace: origin_gpu {int(o[(o < 0) | (o >= num_gpus)][0])} is outside the"
                f" cluster's GPUs 0..{num_gpus - 1}"
            )
        return o
    return np.arange(block.num_tokens, dtype=np.int64) % num_gpus
