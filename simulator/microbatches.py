"""Cutting a streamed trace into micro-batches (bounded memory, pure numpy).

Two rules: one micro-batch per recorded *step* (consecutive tokens with the same ``step``;
a trace without steps is one micro-batch per block it arrives in), or fixed micro-batches of
N tokens in trace order.  Both consume blocks lazily and hold at most one micro-batch plus
one block in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from traces.infra.errors import InputError
from traces.io import concat_traces
from traces.trace import RoutingTrace


def by_tokens(blocks: Iterable[RoutingTrace], tokens: int) -> Iterator[RoutingTrace]:
    """Consecutive micro-batches of exactly ``tokens`` tokens (the last may be shorter)."""
    if tokens < 1:
        raise InputError(f"micro-batch size must be >= 1 token, got {tokens}")
    buffer: list[RoutingTrace] = []
    held = 0
    for block in blocks:
        if block.num_tokens == 0:
            continue
        buffer.append(block)
        held += block.num_tokens
        while held >= tokens:
            joined = concat_traces(buffer) if len(buffer) > 1 else buffer[0]
            yield joined.take(slice(0, tokens))
            rest = joined.take(slice(tokens, None))
            buffer = [rest] if rest.num_tokens else []
            held = rest.num_tokens
    if held:
        yield concat_traces(buffer) if len(buffer) > 1 else buffer[0]


def by_steps(blocks: Iterable[RoutingTrace]) -> Iterator[RoutingTrace]:
    """One micro-batch per run of consecutive tokens with the same recorded step."""
    buffer: list[RoutingTrace] = []
    for block in blocks:
        if block.num_tokens == 0:
            continue
        if block.step is None:
            if buffer:
                yield concat_traces(buffer) if len(buffer) > 1 else buffer[0]
                buffer = []
            yield block
            continue
        cuts = np.flatnonzero(np.diff(block.step)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [block.num_tokens]])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            part = block if (s, e) == (0, block.num_tokens) else block.take(slice(s, e))
            last = buffer[-1].step if buffer else None
            if last is not None and part.step is not None and last[-1] != part.step[0]:
                yield concat_traces(buffer) if len(buffer) > 1 else buffer[0]
                buffer = []
            buffer.append(part)
    if buffer:
        yield concat_traces(buffer) if len(buffer) > 1 else buffer[0]


def microbatches(
    blocks: Iterable[RoutingTrace], tokens: int | None = None
) -> Iterator[RoutingTrace]:
    """``by_tokens`` when ``tokens`` is given, else ``by_steps``."""
    return by_tokens(blocks, tokens) if tokens is not None else by_steps(blocks)
