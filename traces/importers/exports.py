"""Native traces back into the engines' formats (the inverse of the importers).

What survives a round trip engine -> native -> engine is what both sides hold: expert ids,
sequences, positions, origins (as ranks) and steps (as passes or iterations).  Not kept by a
native trace, so written as placeholders: SGLang's ``input_ids`` (0), the physical copy a token
used (the first copy of its expert), vLLM/SGLang dense-layer rows (0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from traces.importers.engine_arrays import num_hidden_layers
from traces.importers.formats import EXPORT_FORMATS
from traces.infra.atomic import atomic_write_text
from traces.infra.errors import InputError
from traces.io import iter_trace
from traces.trace import RoutingTrace


def sglang_logical_count(blocks: Iterator[RoutingTrace]) -> dict[str, list[list[int]]]:
    """``{"logical_count": [transformer layers][experts]}`` of routed-token counts."""
    counts: np.ndarray | None = None
    model = None
    for b in blocks:
        model = b.meta.model
        if counts is None:
            counts = np.zeros((num_hidden_layers(model), model.num_routed_experts), np.int64)
        for li, layer in enumerate(model.moe_layer_indices):
            counts[layer] += np.bincount(
                b.experts[:, li].ravel().astype(np.int64), minlength=model.num_routed_experts
            )
    if counts is None:
        raise InputError("the trace holds no tokens; nothing written")
    return {"logical_count": counts.tolist()}


def _writer(fmt: str) -> Callable[[Iterator[RoutingTrace], Path], int]:
    if fmt == "sglang-dump":
        from traces.importers.sglang_dump import write_sglang_dump

        return write_sglang_dump
    if fmt in ("sglang-routed", "vllm-routed"):
        from traces.importers.api_responses import write_api_responses

        return lambda blocks, out: write_api_responses(fmt, blocks, out)
    if fmt == "vllm":
        from traces.importers.vllm import write_vllm

        return write_vllm
    if fmt == "trtllm":
        from traces.importers.trtllm import write_trtllm_stats

        return write_trtllm_stats
    if fmt == "megatron":
        from traces.importers.megatron import write_megatron

        return write_megatron
    if fmt == "topk-parquet":
        from traces.importers.topk_parquet import write_topk_parquet

        return write_topk_parquet
    if fmt == "sglang-logical-count":

        def write(blocks: Iterator[RoutingTrace], out: Path) -> int:
            tokens = 0

            def counted() -> Iterator[RoutingTrace]:
                nonlocal tokens
                for b in blocks:
                    tokens += b.num_tokens
                    yield b

            atomic_write_text(out, json.dumps(sglang_logical_count(counted())) + "\n")
            return tokens

        return write
    raise InputError(f"unknown export format {fmt!r}; known: {', '.join(sorted(EXPORT_FORMATS))}")


def export_trace(
    fmt: str, trace: str | os.PathLike[str], out: str | os.PathLike[str],
    through: Callable[[Iterator[RoutingTrace]], Iterator[RoutingTrace]] | None = None,
) -> int:
    """Write the native trace ``trace`` as ``fmt`` to ``out``; return the token count.
    ``through`` sees the blocks on their way to the writer (a progress bar)."""
    blocks = iter_trace(trace)
    return _writer(fmt)(blocks if through is None else through(blocks), Path(out))
