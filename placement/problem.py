"""The placement problem and its result types (design.md section 5).

The placer sees numbers only: a GPU distance matrix, which server holds each GPU, the slots
every GPU has, where tokens originate and how often each expert is used.  It never sees a
graph object or a simulator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from traces.errors import InputError


@dataclass(frozen=True, eq=False)
class PlacementProblem:
    """Optimisation input.

    ``activation[l, i]`` is the probability that a token routes to expert i of MoE layer l
    (rows sum to top_k; the paper's ILP uses top_k / experts everywhere).  ``origin_weight[g]``
    is the share of tokens whose hidden state starts on GPU g (default: uniform).
    """

    distance: np.ndarray  # [gpus, gpus]
    gpu_server: np.ndarray  # [gpus] server index
    activation: np.ndarray  # [layers, experts]
    slots_per_gpu: int = field(metadata={"help": "Experts (all layers) one GPU can hold."})
    max_per_gpu_per_layer: int = field(metadata={"help": "Experts of one layer per GPU."})
    origin_weight: np.ndarray | None = None
    layer_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        validate_problem(self)

    @property
    def num_gpus(self) -> int:
        return int(self.distance.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.activation.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.activation.shape[1])

    @property
    def num_servers(self) -> int:
        return int(self.gpu_server.max()) + 1

    @property
    def origins(self) -> np.ndarray:
        """Normalised origin weights [gpus]."""
        if self.origin_weight is None:
            return np.full(self.num_gpus, 1.0 / self.num_gpus)
        return self.origin_weight / self.origin_weight.sum()

    def gpu_cost(self) -> np.ndarray:
        """Expected dispatch + combine distance from a token's origin to each GPU, [gpus]."""
        w = self.origins
        return w @ self.distance + self.distance @ w

    def server_gpus(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.gpu_server == s)


def default_slots(num_layers: int, num_experts: int, num_gpus: int) -> tuple[int, int]:
    """Fewest slots that hold one copy of every expert: (slots_per_gpu, per layer per GPU)."""
    return -(-num_layers * num_experts // num_gpus), -(-num_experts // num_gpus)


def validate_problem(p: PlacementProblem) -> None:
    """Raise :class:`InputError` before any solve starts."""
    d = p.distance
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise InputError(f"placement: distance matrix must be square, got {list(d.shape)}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise InputError("placement: distance matrix has negative, NaN or infinite entries")
    if d.shape[0] < 1:
        raise InputError("placement: the cluster needs at least one GPU (distance matrix is empty)")
    if p.gpu_server.shape != (d.shape[0],):
        raise InputError(
            f"placement: distance matrix is for {d.shape[0]} GPUs but server membership lists"
            f" {p.gpu_server.shape[0] if p.gpu_server.ndim == 1 else p.gpu_server.shape}"
        )
    if not np.issubdtype(p.gpu_server.dtype, np.integer):
        raise InputError(
            f"placement: server indices of GPUs must be integers, got {p.gpu_server.dtype}"
        )
    servers = np.unique(p.gpu_server)
    if servers[0] != 0 or servers[-1] != len(servers) - 1:
        raise InputError("placement: server indices must be 0..servers-1, each with a GPU")
    a = p.activation
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"placement: activation must be [layers, experts], got {list(a.shape)}")
    if not np.isfinite(a).all():
        l_ = int(np.argwhere(~np.isfinite(a))[0][0])
        raise InputError(f"placement: activation row {l_} has NaN or infinite values")
    if (a < 0).any():
        l_ = int(np.argwhere(a < 0)[0][0])
        raise InputError(f"placement: activation row {l_} has negative values")
    if p.layer_indices and len(p.layer_indices) != a.shape[0]:
        raise InputError("placement: layer_indices must name every activation row")
    if p.origin_weight is not None:
        w = p.origin_weight
        if w.shape != (d.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InputError("placement: origin_weight must be one non-negative weight per GPU")
    if p.slots_per_gpu < 1 or p.max_per_gpu_per_layer < 1:
        raise InputError("placement: slots_per_gpu and max_per_gpu_per_layer must be >= 1")
    g = d.shape[0]
    total = p.num_layers * p.num_experts
    if p.slots_per_gpu * g < total:
        raise InputError(
            f"placement: {g} GPUs x {p.slots_per_gpu} slots = {p.slots_per_gpu * g} cannot hold"
            f" {p.num_layers} layers x {p.num_experts} experts = {total}; raise slots_per_gpu to"
            f" at least {-(-total // g)}"
        )
    if p.max_per_gpu_per_layer * g < p.num_experts:
        raise InputError(
            f"placement: {g} GPUs x {p.max_per_gpu_per_layer} experts per layer cannot hold the"
            f" {p.num_experts} experts of a layer; raise max_per_gpu_per_layer to at least"
            f" {-(-p.num_experts // g)}"
        )


@dataclass(frozen=True, eq=False)
class ExpertLayout:
    """``expert_gpus[l, i, r]``: GPU of replica r of expert i in MoE layer l; -1 = no replica."""

    expert_gpus: np.ndarray
    num_gpus: int

    @property
    def primary(self) -> np.ndarray:
        return self.expert_gpus[:, :, 0]

    @classmethod
    def from_primary(cls, gpus: np.ndarray, num_gpus: int) -> ExpertLayout:
        return cls(np.asarray(gpus, dtype=np.int64)[:, :, None], num_gpus)

    def to_frame(
        self, gpu_server: np.ndarray | None = None, layer_indices: tuple[int, ...] = ()
    ) -> pd.DataFrame:
        """Tidy table: layer, expert, replica, gpu (and server)."""
        layers, experts, reps = np.nonzero(self.expert_gpus >= 0)
        gpu = self.expert_gpus[layers, experts, reps]
        df = pd.DataFrame(
            {
                "layer": np.asarray(layer_indices)[layers] if layer_indices else layers,
                "expert": experts,
                "replica": reps,
                "gpu": gpu,
            }
        )
        if gpu_server is not None:
            df["server"] = gpu_server[gpu]
        return df


class SolveStatus(enum.Enum):
    OPTIMAL = "optimal"
    HEURISTIC = "heuristic"  # a constructive baseline: valid layout, no optimality claim
    FEASIBLE = "feasible"  # time limit or gap reached with an incumbent; gap reported
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no-solution"  # stopped before any feasible layout was found
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SolverOptions:
    """HiGHS options, recorded with every result."""

    time_limit_s: float = field(default=60.0, metadata={"help": "Solver time limit."})
    mip_rel_gap: float = field(default=1e-6, metadata={"help": "Relative MIP gap to stop at."})
    threads: int = field(default=1, metadata={"help": "HiGHS threads."})
    seed: int = field(default=0, metadata={"help": "HiGHS random_seed (and baseline rng)."})

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise InputError("solver: time_limit_s must be > 0")
        if not 0 <= self.mip_rel_gap < 1:
            raise InputError("solver: mip_rel_gap must be in [0, 1)")
        if self.threads < 1:
            raise InputError("solver: threads must be >= 1")
        if not 0 <= self.seed <= 2**31 - 1:
            raise InputError(f"solver: seed must be in 0..2147483647, got {self.seed}")


@dataclass(frozen=True, eq=False)
class PlacementResult:
    strategy: str
    status: SolveStatus
    layout: ExpertLayout | None
    objective: float  # expected dispatch+combine distance per token (all layers)
    mip_gap: float
    runtime_s: float
    options: SolverOptions
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Never an unmarked answer: a layout comes with a status that vouches for it, and a
        # limit-stopped (FEASIBLE) layout always carries its gap.
        ok = self.status in (SolveStatus.OPTIMAL, SolveStatus.HEURISTIC, SolveStatus.FEASIBLE)
        if ok != (self.layout is not None):
            raise ValueError(
                f"{self.strategy}: status {self.status.value} with"
                f" {'a' if self.layout is not None else 'no'} layout"
            )
        if self.status is SolveStatus.FEASIBLE and np.isnan(self.mip_gap):
            raise ValueError(f"{self.strategy}: a feasible (limit-stopped) result needs its gap")

    @property
    def is_ok(self) -> bool:
        return self.layout is not None and self.status in (
            SolveStatus.OPTIMAL,
            SolveStatus.HEURISTIC,
            SolveStatus.FEASIBLE,
        )


def expected_cost(problem: PlacementProblem, layout: ExpertLayout) -> float:
    """Expected dispatch + combine distance per token under the layout (nearest replica).

    Independent of any solver: sum over layers, experts and origins of
    p[l, i] * w[o] * (d[o, host] + d[host, o]) with host the replica nearest to o.
    """
    d = problem.distance
    w = problem.origins
    cand = layout.expert_gpus  # [L, E, R]
    rt = d + d.T  # round trip o -> host -> o
    costs = np.where(cand[..., None] >= 0, rt[np.maximum(cand, 0)], np.inf)  # [L,E,R,G]
    best = costs.min(axis=2)  # [L, E, G] nearest replica per origin
    return float((problem.activation[:, :, None] * best * w[None, None, :]).sum())
