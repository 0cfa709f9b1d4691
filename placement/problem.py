"""The placement problem and its result types (docs/reference/strategies.md).

The strategy sees numbers only: a GPU distance matrix, which server holds each GPU, the slots
every GPU has, where tokens originate and how often each expert is used.  It never sees a
graph object or a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from placement.options import SolverOptions
from placement.outcome import SolverOutcome, SolveStatus
from placement.token_sample import TokenSample
from traces.infra.errors import InputError


@dataclass(frozen=True, eq=False)
class PlacementProblem:
    """Optimisation input.

    ``activation[l, i]`` is the probability that a token routes to expert i of MoE layer l
    (rows sum to top_k; the paper's ILP uses top_k / experts everywhere).  ``origin_weight[g]``
    is the share of tokens whose hidden state starts on GPU g (default: uniform).

    Optional numbers for the stronger variants (all computed outside ``placement``):

    * ``origin_activation[l, i, g]``: probability that a token starts on GPU g *and* routes to
      expert i of layer l (sums over g to ``activation``); when given it is the traffic model
      of the expected cost and of ``ilp-origin``.
    * ``pair_seconds_per_byte[a, b]``: wire time of one byte from GPU a to GPU b (sum over the
      route's links of 1 / bandwidth), with ``dispatch_bytes`` / ``combine_bytes`` per route:
      the cost of ``ilp-bytes``.
    * ``server_link_incidence[a, b, e]``: 1 when the route from server a to server b uses
      network link e (ECMP as routed), with ``link_bandwidth_bytes_per_s[e]``: ``ilp-bottleneck``.
    * ``num_redundant``: extra replica slots per MoE layer (EPLB's redundant experts).
    * ``balance_eps``: every GPU's expected token load (summed over layers) at most
      (1 + eps) x the mean.
    * ``expert_groups``: routing groups of a layer (DeepSeek-V3: 8), used by ``eplb`` and
      ``dedup``.
    * ``token_sample``: per-token routing and origins (co-activation), fitted by ``dedup``.
    """

    distance: np.ndarray  # [gpus, gpus]
    gpu_server: np.ndarray  # [gpus] server index
    activation: np.ndarray  # [layers, experts]
    slots_per_gpu: int = field(metadata={"help": "Experts (all layers) one GPU can hold."})
    max_per_gpu_per_layer: int = field(metadata={"help": "Experts of one layer per GPU."})
    origin_weight: np.ndarray | None = None
    layer_indices: tuple[int, ...] = ()
    origin_activation: np.ndarray | None = None  # [layers, experts, gpus]
    pair_seconds_per_byte: np.ndarray | None = None  # [gpus, gpus]
    dispatch_bytes: float = field(default=1.0, metadata={"help": "Bytes a route dispatches."})
    combine_bytes: float = field(default=2.0, metadata={"help": "Bytes a route combines."})
    server_link_incidence: np.ndarray | None = None  # [servers, servers, links]
    link_bandwidth_bytes_per_s: np.ndarray | None = None  # [links]
    num_redundant: int = field(default=0, metadata={"help": "Extra replicas per MoE layer."})
    balance_eps: float | None = field(
        default=None, metadata={"help": "GPU load at most (1 + eps) x mean; None = off."}
    )
    expert_groups: int = field(default=1, metadata={"help": "Routing groups per layer (eplb)."})
    token_sample: TokenSample | None = None

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

    @property
    def gpus_per_server(self) -> np.ndarray:
        return np.bincount(self.gpu_server, minlength=self.num_servers)

    @property
    def physical_per_layer(self) -> int:
        """Expert copies per layer: one per expert plus the redundant ones."""
        return self.num_experts + self.num_redundant

    def gpu_cost(self) -> np.ndarray:
        """Expected dispatch + combine distance from a token's origin to each GPU, [gpus]."""
        w = self.origins
        return w @ self.distance + self.distance @ w

    def round_trip(self, metric: str = "hops") -> np.ndarray:
        """Cost of one route, dispatch origin -> host plus combine back, [origin, host].

        ``hops``: distance there and back (the paper's cost); ``wire``: seconds on the wire,
        dispatch_bytes x s/B(origin -> host) + combine_bytes x s/B(host -> origin).
        """
        if metric == "hops":
            return self.distance + self.distance.T
        if metric == "wire":
            spb = self.pair_seconds_per_byte
            if spb is None:
                raise InputError(
                    "placement: the wire-time cost needs pair_seconds_per_byte (per GPU pair)"
                )
            return self.dispatch_bytes * spb + self.combine_bytes * spb.T
        raise InputError(f"placement: unknown cost metric {metric!r} (hops or wire)")

    def origin_split(self) -> np.ndarray:
        """Activation per origin GPU, [layers, experts, gpus] (marginal x origins if unknown)."""
        if self.origin_activation is not None:
            return self.origin_activation
        return self.activation[:, :, None] * self.origins[None, None, :]

    def expert_gpu_cost(self, metric: str = "hops", per_origin: bool | None = None) -> np.ndarray:
        """Expected cost per token of expert (l, i) living on GPU h, [layers * experts, gpus].

        ``per_origin``: use ``origin_activation`` (default: when given); otherwise the
        marginal activation times the origin weights.
        """
        rt = self.round_trip(metric)
        L, E = self.num_layers, self.num_experts
        if per_origin is None:
            per_origin = self.origin_activation is not None
        if per_origin:
            return self.origin_split().reshape(L * E, self.num_gpus) @ rt
        return self.activation.reshape(L * E)[:, None] * (self.origins @ rt)[None, :]

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
    _validate_variant_inputs(p)
    if p.token_sample is not None:
        p.token_sample.validate(a.shape[0], a.shape[1], d.shape[0])
    if p.slots_per_gpu < 1 or p.max_per_gpu_per_layer < 1:
        raise InputError("placement: slots_per_gpu and max_per_gpu_per_layer must be >= 1")
    g = d.shape[0]
    per_layer = p.num_experts + p.num_redundant
    total = p.num_layers * per_layer
    what = f"{p.num_layers} layers x {p.num_experts} experts" + (
        f" (+{p.num_redundant} redundant per layer)" if p.num_redundant else ""
    )
    if p.slots_per_gpu * g < total:
        raise InputError(
            f"placement: {g} GPUs x {p.slots_per_gpu} slots = {p.slots_per_gpu * g} cannot hold"
            f" {what} = {total}; raise slots_per_gpu to at least {-(-total // g)}"
        )
    if p.max_per_gpu_per_layer * g < per_layer:
        raise InputError(
            f"placement: {g} GPUs x {p.max_per_gpu_per_layer} experts per layer cannot hold the"
            f" {per_layer} expert copies of a layer; raise max_per_gpu_per_layer to at least"
            f" {-(-per_layer // g)}"
        )


def _validate_variant_inputs(p: PlacementProblem) -> None:
    """Shapes and values of the optional inputs of the stronger ILP variants."""
    g = p.distance.shape[0]
    s = int(p.gpu_server.max()) + 1
    L, E = p.activation.shape
    oa = p.origin_activation
    if oa is not None:
        if oa.shape != (L, E, g):
            raise InputError(
                f"placement: origin_activation must be [layers, experts, gpus] = {[L, E, g]},"
                f" got {list(oa.shape)}"
            )
        if not np.isfinite(oa).all() or (oa < 0).any():
            l_ = int(np.argwhere(~np.isfinite(oa) | (oa < 0))[0][0])
            raise InputError(
                f"placement: origin_activation row {l_} has negative, NaN or infinite values"
            )
        if not np.allclose(oa.sum(axis=2), p.activation, rtol=1e-6, atol=1e-9):
            raise InputError(
                "placement: origin_activation summed over origins must equal activation"
            )
    spb = p.pair_seconds_per_byte
    if spb is not None and (
        spb.shape != (g, g) or not np.isfinite(spb).all() or (spb < 0).any()
    ):
        raise InputError(
            f"placement: pair_seconds_per_byte must be a finite non-negative [{g}, {g}] matrix"
        )
    for name in ("dispatch_bytes", "combine_bytes"):
        v = getattr(p, name)
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"placement: {name} must be a positive number, got {v}")
    inc, bw = p.server_link_incidence, p.link_bandwidth_bytes_per_s
    if (inc is None) != (bw is None):
        raise InputError(
            "placement: server_link_incidence and link_bandwidth_bytes_per_s come together"
        )
    if inc is not None and bw is not None:
        if inc.ndim != 3 or inc.shape[:2] != (s, s) or bw.shape != (inc.shape[2],):
            raise InputError(
                f"placement: server_link_incidence must be [{s}, {s}, links] with one bandwidth"
                f" per link, got {list(inc.shape)} and {list(bw.shape)}"
            )
        if not np.isfinite(bw).all() or (bw <= 0).any():
            raise InputError("placement: link bandwidths must be positive numbers")
    if p.num_redundant < 0:
        raise InputError(f"placement: num_redundant must be >= 0, got {p.num_redundant}")
    if p.num_redundant > E * (g - 1):
        raise InputError(
            f"placement: {p.num_redundant} replicas per layer, but {E} experts on {g} GPUs hold"
            f" at most {E * (g - 1)} (one copy of an expert per GPU); lower --replicas"
        )
    if p.balance_eps is not None and not (np.isfinite(p.balance_eps) and p.balance_eps >= 0):
        raise InputError(f"placement: balance_eps must be >= 0, got {p.balance_eps}")
    if p.expert_groups < 1 or E % p.expert_groups:
        raise InputError(
            f"placement: expert_groups={p.expert_groups} must divide the {E} experts of a layer"
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

    @classmethod
    def from_slots(
        cls, slot_experts: list[np.ndarray], num_experts: int, num_gpus: int
    ) -> tuple[ExpertLayout, list[int]]:
        """From the expert in every physical slot of each layer (slot j on GPU j // per, per =
        slots / GPUs), copies in slot order without repeats per GPU; and for each layer the
        first expert without a slot (-1: none), for the caller's message."""
        hosts: list[list[list[int]]] = []
        lost: list[int] = []
        for arr in slot_experts:
            per = len(arr) // num_gpus
            layer: list[list[int]] = [[] for _ in range(num_experts)]
            for j, e in enumerate(arr.tolist()):
                if j // per not in layer[e]:
                    layer[e].append(j // per)
            lost.append(next((e for e in range(num_experts) if not layer[e]), -1))
            hosts.append(layer)
        reps = max((len(g) for layer in hosts for g in layer), default=1)
        out = np.full((len(hosts), num_experts, reps), -1, dtype=np.int64)
        for li, layer in enumerate(hosts):
            for e, gpus in enumerate(layer):
                out[li, e, : len(gpus)] = gpus
        return cls(out, num_gpus), lost

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


@dataclass(frozen=True, eq=False)
class PlacementResult:
    """A strategy's answer: the layout (None when there is none) and what vouches for it.

    ``objective`` is the independent expected cost of the layout (``expected_cost``: hops per
    token, every strategy alike); ``solver`` is what the solver said (termination, its own
    objective in the model's units, dual bound, gap), None for constructive baselines.
    """

    strategy: str
    status: SolveStatus
    layout: ExpertLayout | None
    objective: float  # expected dispatch+combine distance per token (all layers)
    runtime_s: float
    options: SolverOptions
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    solver: SolverOutcome | None = None

    def __post_init__(self) -> None:
        # Never an unmarked answer: a layout comes with a status that vouches for it, and a
        # solver's answer says what the solver said (a limit-stopped layout carries its gap).
        if self.status.has_layout != (self.layout is not None):
            raise ValueError(
                f"{self.strategy}: status {self.status.value} with"
                f" {'a' if self.layout is not None else 'no'} layout"
            )
        if self.status is not SolveStatus.HEURISTIC and self.layout is not None:
            if self.solver is None:
                raise ValueError(f"{self.strategy}: a {self.status.value} layout needs the"
                                 " solver outcome (termination, bound, gap)")
            if self.solver.status is not self.status:
                raise ValueError(f"{self.strategy}: status {self.status.value} but the solver"
                                 f" outcome says {self.solver.status.value}")
        if self.status is SolveStatus.FEASIBLE and not np.isfinite(self.gap):
            raise ValueError(f"{self.strategy}: a feasible (limit-stopped) result needs its gap")

    @property
    def is_ok(self) -> bool:
        return self.layout is not None and self.status.has_layout

    @property
    def gap(self) -> float:
        """Relative gap to the solver's dual bound: 0 proven optimal, inf no bound, nan no
        solver (a heuristic)."""
        return self.solver.gap if self.solver is not None else float("nan")

    @property
    def dual_bound(self) -> float:
        """The solver's proven lower bound in its objective's units; nan without one."""
        return self.solver.dual_bound if self.solver is not None else float("nan")


def expected_cost(problem: PlacementProblem, layout: ExpertLayout, metric: str = "hops") -> float:
    """Expected dispatch + combine cost per token under the layout (nearest replica).

    Independent of any solver: sum over layers, experts and origins o of
    a[l, i, o] * (cost(o -> host) + cost(host -> o)) with host the replica nearest to o in
    distance (the simulator's rule), a = ``origin_activation`` when given, else p[l, i] x w[o].
    ``metric``: ``hops`` (distance) or ``wire`` (seconds on the wire, see ``round_trip``).
    """
    d = problem.distance
    cand = layout.expert_gpus  # [L, E, R]
    rt = problem.round_trip(metric)
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    if cand.shape[2] == 1:  # one copy each: cost of expert (l, i) = a[l, i, :] . rt[:, host]
        host = cand[:, :, 0].reshape(-1)
        if problem.origin_activation is None:
            per_gpu = problem.origins @ rt
            return float((problem.activation.reshape(-1) * per_gpu[host]).sum())
        a = problem.origin_activation.reshape(L * E, G)
        return float(np.einsum("eo,eo->", a, rt.T[host]))
    safe = np.maximum(cand, 0)
    hops = d.T[safe]  # [L, E, R, G]: distance origin -> replica
    hops = np.where(cand[..., None] >= 0, hops, np.inf)
    pick = np.argmin(hops, axis=2)  # nearest replica per origin (ties: lowest index)
    host3 = np.take_along_axis(safe, pick, axis=2)  # [L, E, G]
    cost = rt[np.arange(G)[None, None, :], host3]
    return float((problem.origin_split() * cost).sum())
