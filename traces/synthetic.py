"""Seeded synthetic routing traces with skewed, DeepSeek-like expert popularity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from traces.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, expert_dtype


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Knobs of the synthetic generator."""

    model: ModelSpec
    num_tokens: int = field(metadata={"help": "Tokens to generate."})
    seq_len: int = field(default=512, metadata={"help": "Tokens per sequence."})
    step_tokens: int = field(default=4096, metadata={"help": "Tokens per step (micro-batch)."})
    num_gpus: int = field(default=8, metadata={"help": "GPUs that sequences are spread over."})
    zipf_exponent: float = field(
        default=1.0, metadata={"help": "Popularity of the r-th hottest expert ~ r^-exponent."}
    )
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            raise InputError("synthetic trace: num_tokens must be >= 0")
        if self.seq_len < 1 or self.step_tokens < 1 or self.num_gpus < 1:
            raise InputError("synthetic trace: seq_len, step_tokens and num_gpus must be >= 1")
        if not np.isfinite(self.zipf_exponent) or self.zipf_exponent < 0:
            raise InputError("synthetic trace: zipf_exponent must be a finite number >= 0")
        if self.seed < 0:
            raise InputError(f"synthetic trace: seed must be >= 0, got {self.seed}")


def layer_popularity(config: SynthConfig) -> np.ndarray:
    """Expected activation weights [moe_layers, experts] (each row sums to 1).

    Every layer gets Zipf-shaped weights over a layer-specific random permutation of its
    experts, so the hot experts differ from layer to layer, as in real DeepSeek traces.
    """
    m = config.model
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    ranks = np.arange(1, m.num_routed_experts + 1, dtype=np.float64)
    base = ranks ** (-config.zipf_exponent)
    base /= base.sum()
    pop = np.empty((m.num_moe_layers, m.num_routed_experts))
    for li in range(m.num_moe_layers):
        pop[li, rng.permutation(m.num_routed_experts)] = base
    return pop


def _route(
    log_pop: np.ndarray, model: ModelSpec, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Top-k experts for n tokens of one layer: Gumbel-perturbed scores, group-limited."""
    e = model.num_routed_experts
    scores = log_pop[None, :] + rng.gumbel(size=(n, e)).astype(np.float32)
    if model.num_expert_groups > 1 and model.topk_groups < model.num_expert_groups:
        g = model.num_expert_groups
        grouped = scores.reshape(n, g, e // g)
        # DeepSeek-V3 rule: a group's score is the sum of its two best experts.
        top2 = -np.partition(-grouped, 1, axis=2)[:, :, :2].sum(axis=2)
        keep = np.argpartition(-top2, model.topk_groups - 1, axis=1)[:, : model.topk_groups]
        mask = np.full((n, g), -np.inf, dtype=np.float32)
        np.put_along_axis(mask, keep, 0.0, axis=1)
        scores = (grouped + mask[:, :, None]).reshape(n, e)
    return np.argpartition(-scores, model.top_k - 1, axis=1)[:, : model.top_k]


_UNIT_TOKENS = 4096  # random streams are drawn per unit, so output is chunk-size independent


def _unit(config: SynthConfig, log_pop: np.ndarray, meta: TraceMeta, u: int) -> RoutingTrace:
    m = config.model
    start = u * _UNIT_TOKENS
    n = min(_UNIT_TOKENS, config.num_tokens - start)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, u]))
    experts = np.empty((n, m.num_moe_layers, m.top_k), dtype=expert_dtype(m.num_routed_experts))
    for li in range(m.num_moe_layers):
        experts[:, li, :] = _route(log_pop[li], m, n, rng)
    tok = np.arange(start, start + n, dtype=np.int64)
    seq = tok // config.seq_len
    return RoutingTrace(
        meta=meta,
        experts=experts,
        seq_id=seq,
        position=(tok % config.seq_len).astype(np.int32),
        origin_gpu=(seq % config.num_gpus).astype(np.int32),
        step=(tok // config.step_tokens).astype(np.int32),
    )


def iter_synthetic(config: SynthConfig, chunk_tokens: int = 16_384) -> Iterator[RoutingTrace]:
    """Generate the trace block by block (bounded memory).

    The tokens depend only on the configuration (seed included), never on ``chunk_tokens``.
    """
    from traces.io import concat_traces

    if chunk_tokens < 1:
        raise InputError("synthetic trace: chunk_tokens must be >= 1")
    m = config.model
    log_pop = np.log(layer_popularity(config)).astype(np.float32)
    meta = TraceMeta(
        model=m,
        source="synthetic",
        produced_by=(
            f"moe-netsim synth: zipf_exponent={config.zipf_exponent} seq_len={config.seq_len}"
            f" step_tokens={config.step_tokens} num_gpus={config.num_gpus} seed={config.seed}"
        ),
    )
    units = -(-config.num_tokens // _UNIT_TOKENS)
    buffer: list[RoutingTrace] = []
    buffered = 0
    for u in range(units):
        unit = _unit(config, log_pop, meta, u)
        buffer.append(unit)
        buffered += unit.num_tokens
        while buffered >= chunk_tokens or (u == units - 1 and buffered > 0):
            joined = concat_traces(buffer) if len(buffer) > 1 else buffer[0]
            take = min(chunk_tokens, buffered)
            yield joined.take(slice(0, take))
            rest = joined.take(slice(take, None))
            buffer = [rest] if rest.num_tokens else []
            buffered = rest.num_tokens


def generate_trace(config: SynthConfig) -> RoutingTrace:
    """The whole synthetic trace in memory."""
    from traces.io import concat_traces

    blocks = list(iter_synthetic(config))
    if not blocks:
        raise InputError("synthetic trace: num_tokens must be >= 1 to build an in-memory trace")
    return concat_traces(blocks)
