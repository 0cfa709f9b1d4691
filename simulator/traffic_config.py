"""How many bytes a route moves and how the fabric spreads its copies: :class:`TrafficConfig`
and the dispatch schemes' one definition.  No numpy (the command line's parsers derive their
flags from it); :mod:`simulator.traffic` turns routing decisions into traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simulator.cluster.multipath_modes import DEFAULT_MULTIPATH, MULTIPATH_MODES, check_multipath
from traces.infra.errors import InputError
from traces.infra.options import check_options, option
from traces.model import ModelSpec

if TYPE_CHECKING:
    from simulator.cluster.paths import RouteTable
    from simulator.cluster.topology import ClusterSpec

SHARED_EXPERTS_NOTE = "shared experts are replicated on every GPU and move no bytes"

DISPATCH_SCHEMES: dict[str, str] = {
    "all-to-all": "one copy per route, GPU pair to GPU pair (NCCL-like; PXN on per-GPU NICs)",
    "deepep-ll": "DeepEP low-latency: one copy per route, direct RDMA NIC to NIC",
    "deepep-normal": "DeepEP normal: one RDMA copy per token and remote server to the GPU of"
    " the same local index (pooled NICs: the server endpoint), then NVLink fan-out",
}
DEFAULT_DISPATCH = "all-to-all"
# options that were replaced: old name -> what to give instead (CLI flags and study keys)
REPLACED_OPTIONS = {"server_dedup": ("dispatch", "deepep-normal")}


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """How many bytes a route moves, which copies the dispatch scheme sends and how the fabric
    spreads them over its paths."""

    dispatch_bytes_per_element: float = option(
        1.0, "Bytes per hidden element sent to the expert (FP8: 1).", "bytes", 0, 1024,
        low_open=True)
    combine_bytes_per_element: float = option(
        2.0, "Bytes per element sent back (BF16: 2).", "bytes", 0, 1024, low_open=True)
    hidden_size: int | None = option(
        None, "Hidden size; default: the trace's model.", "elements", 1, 2**24)
    dispatch: str = field(
        default=DEFAULT_DISPATCH,
        metadata={"help": "Dispatch scheme: " + "; ".join(
            f"{k}: {v}" for k, v in DISPATCH_SCHEMES.items()), "choices": DISPATCH_SCHEMES},
    )
    multipath: str = field(
        default=DEFAULT_MULTIPATH,
        metadata={"help": "How the fabric spreads traffic over equal-cost paths: " + "; ".join(
            f"{k}: {v}" for k, v in MULTIPATH_MODES.items()), "choices": MULTIPATH_MODES},
    )
    flows_per_pair: int | None = option(
        None, "Flows (queue pairs) per GPU pair for multipath 'ecmp' (default 4).", "flows",
        1, 2**16)

    def __post_init__(self) -> None:
        check_options(self, "traffic")
        if self.dispatch not in DISPATCH_SCHEMES:
            raise InputError(
                f"traffic: unknown dispatch scheme {self.dispatch!r}; choose one of"
                f" {', '.join(DISPATCH_SCHEMES)}"
            )
        try:
            check_multipath(self.multipath, self.flows_per_pair)
        except InputError as exc:
            raise InputError(f"traffic: {exc}") from None

    def route_bytes(self, model: ModelSpec) -> tuple[int, int]:
        """(dispatch, combine) bytes of one copy, rounded to whole bytes."""
        hidden = self.hidden_size or model.hidden_size
        out = (
            int(round(hidden * self.dispatch_bytes_per_element)),
            int(round(hidden * self.combine_bytes_per_element)),
        )
        if min(out) < 1:
            raise InputError(
                f"traffic: a copy of hidden size {hidden} would carry {out} (dispatch, combine)"
                " bytes; raise the bytes per element so each copy carries at least one byte"
            )
        return out

    def bytes_bound(self, model: ModelSpec, tokens: int, max_links: int) -> int:
        """The most bytes a replay of ``tokens`` can count on all links together: every route
        of every MoE layer sent and returned over the longest path, in exact integers (a
        caller refuses what an int64 column cannot hold: ``traces.infra.limits.exact_int64``)."""
        dispatch, combine = self.route_bytes(model)
        return tokens * model.num_moe_layers * model.top_k * (dispatch + combine) * max_links

    def check_byte_counts(self, model: ModelSpec, tokens: int, routes: RouteTable,
                          where: str, fix: str = "") -> None:
        """Refuse (InputError naming ``where``) a count of ``tokens`` whose byte totals an int64
        cannot hold: the one guard every command that counts bytes calls before its work."""
        from traces.infra.limits import exact_int64

        links = longest_route_links(routes)
        d, c = self.route_bytes(model)
        exact_int64(
            self.bytes_bound(model, tokens, links),
            f"{where}: {tokens:,} tokens x {model.num_moe_layers} MoE layers x top-{model.top_k}"
            f" x {d + c:,} bytes per route x {links} links",
            fix or "count fewer tokens (split the trace) or a smaller hidden size or fewer"
            " bytes per element",
        )

    def check_cluster_byte_counts(self, model: ModelSpec, tokens: int, cluster: ClusterSpec,
                                  where: str, fix: str = "") -> None:
        """:meth:`check_byte_counts` before the routes exist: no route is longer than all of
        the cluster's links, so the routes are built (to count exactly) only when that loose
        bound does not fit."""
        from traces.infra.limits import INT64_MAX

        if self.bytes_bound(model, tokens, len(cluster.links) + 2) <= INT64_MAX:
            return
        from simulator.cluster.paths import build_route_table

        self.check_byte_counts(model, tokens, build_route_table(cluster), where, fix)


def longest_route_links(routes: RouteTable) -> int:
    """Links on the longest GPU-to-GPU path: the uplink, the longest middle route, the
    downlink."""
    offsets = routes.middle_offsets
    return int((offsets[1:] - offsets[:-1]).max(initial=0)) + 2
