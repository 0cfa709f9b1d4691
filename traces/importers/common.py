"""What every importer shares: collecting parts into blocks, checking expert ids."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, expert_dtype, find_bad_route


class BlockBuilder:
    """Collects per-sequence parts and cuts them into blocks of about ``chunk_tokens`` tokens."""

    def __init__(self, meta: TraceMeta, chunk_tokens: int) -> None:
        if chunk_tokens < 1:
            raise InputError("chunk size must be at least one token")
        self.meta = meta
        self.chunk_tokens = chunk_tokens
        self._parts: list[dict[str, np.ndarray | None]] = []
        self._tokens = 0

    def add(
        self,
        experts: np.ndarray,
        seq_id: np.ndarray,
        position: np.ndarray,
        gates: np.ndarray | None = None,
        origin_gpu: np.ndarray | None = None,
        step: np.ndarray | None = None,
    ) -> Iterator[RoutingTrace]:
        """Add tokens (already validated by the caller); yield every block that is full."""
        self._parts.append(
            {
                "experts": experts.astype(expert_dtype(self.meta.model.num_routed_experts)),
                "seq_id": seq_id.astype(np.int64, copy=False),
                "position": position.astype(np.int32, copy=False),
                "gates": None if gates is None else gates.astype(np.float32, copy=False),
                "origin_gpu": None if origin_gpu is None else origin_gpu.astype(np.int32),
                "step": None if step is None else step.astype(np.int32),
            }
        )
        self._tokens += len(seq_id)
        if self._tokens >= self.chunk_tokens:
            yield self._flush()

    def finish(self) -> Iterator[RoutingTrace]:
        if self._tokens:
            yield self._flush()

    def _flush(self) -> RoutingTrace:
        def cat(name: str) -> np.ndarray | None:
            parts = [p[name] for p in self._parts]
            return None if parts[0] is None else np.concatenate(parts)  # type: ignore[arg-type]

        block = RoutingTrace(
            meta=self.meta,
            experts=cat("experts"),  # type: ignore[arg-type]
            seq_id=cat("seq_id"),  # type: ignore[arg-type]
            position=cat("position"),  # type: ignore[arg-type]
            origin_gpu=cat("origin_gpu"),
            step=cat("step"),
            gates=cat("gates"),
        )
        self._parts, self._tokens = [], 0
        return block


def check_routes(experts: np.ndarray, model: ModelSpec, where: str, first_token: int = 0) -> None:
    """Raise naming ``where``, the token and the MoE layer of the first bad id in ``experts``."""
    bad = find_bad_route(experts, model.num_routed_experts)
    if bad is not None:
        t, li, what = bad
        raise InputError(
            f"{where}: token {first_token + t}, MoE layer {model.moe_layer_indices[li]}: {what}"
        )


def sequence_runs(blocks: Iterator[RoutingTrace]) -> Iterator[tuple[int, np.ndarray, ModelSpec]]:
    """(seq_id, experts, model) per run of one sequence, joined across block boundaries."""
    pending: tuple[int, list[np.ndarray], ModelSpec] | None = None
    for b in blocks:
        seq = b.seq_id
        starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
        for a, z in zip(starts, np.r_[starts[1:], len(seq)], strict=True):
            sid = int(seq[a])
            if pending is not None and pending[0] == sid:
                pending[1].append(b.experts[a:z])
                continue
            if pending is not None:
                yield pending[0], np.concatenate(pending[1]), pending[2]
            pending = (sid, [b.experts[a:z]], b.meta.model)
    if pending is not None:
        yield pending[0], np.concatenate(pending[1]), pending[2]


def rank_step_groups(b: RoutingTrace) -> Iterator[tuple[int, int, np.ndarray]]:
    """(origin rank, step, token indices) of a block, sorted; 0 where not recorded.

    What an engine writes per rank and pass (SGLang records, TensorRT-LLM iterations).
    """
    origin = b.origin_gpu if b.origin_gpu is not None else np.zeros(b.num_tokens, np.int32)
    step = b.step if b.step is not None else np.zeros(b.num_tokens, np.int32)
    for r, s in sorted({(int(x), int(y)) for x, y in zip(origin, step, strict=True)}):
        yield r, s, np.flatnonzero((origin == r) & (step == s))
