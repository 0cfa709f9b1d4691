"""Routed experts returned by the serving engines' HTTP APIs, saved by the user as JSON(L).

- ``sglang-routed``: SGLang ``--enable-return-routed-experts`` with ``return_routed_experts``
  on the request (SGLang main, 2026: ``srt/layers/moe/routed_experts_capturer.py``): every
  ``/generate`` response carries ``meta_info["routed_experts"]``, base64 of int32
  [tokens, transformer layers, top_k] (layers as in the model's ``num_hidden_layers``; dense
  layers hold no routing and are ignored).
- ``vllm-routed``: vLLM ``--enable-return-routed-experts`` (vLLM 0.23: ``CompletionOutput.
  routed_experts``, int16 [seq_len, layers, top_k], prompt and output tokens): in an
  OpenAI-style response each ``choices[i]["routed_experts"]`` is that array as nested lists.
  Arrays saved from the offline API (``.npy``/``.npz``) are the ``vllm`` format.

Input: one ``.jsonl`` file (one response per line, streamed), or a ``.json`` file holding one
response or a list of them.  Each response (each choice, for vLLM) becomes one sequence in file
order; position = token index.  The APIs record neither the serving rank nor the step.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from traces.importers.common import BlockBuilder, check_routes, sequence_runs
from traces.importers.engine_arrays import moe_rows, num_hidden_layers, physical_to_logical
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta


def iter_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, object) per response: JSONL streamed line by line, JSON as one value or a list."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="strict") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield f"{path}: line {n}", _parse(line, f"{path}: line {n}")
        return
    text = path.read_text(encoding="utf-8")
    obj = _parse(text, str(path))
    items = obj if isinstance(obj, list) else [obj]
    for i, item in enumerate(items):
        yield f"{path}: response {i}", item


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def decode_sglang_routed(value: Any, model: ModelSpec, where: str) -> np.ndarray:
    """``meta_info.routed_experts`` (base64 int32) as [tokens, MoE layers, top_k] ids."""
    if not isinstance(value, str):
        raise InputError(f"{where}: meta_info.routed_experts must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: meta_info.routed_experts is not valid base64") from None
    per_token = num_hidden_layers(model) * model.top_k
    if len(raw) % (4 * per_token):
        raise InputError(
            f"{where}: {len(raw)} bytes of routed experts is not a whole number of tokens x"
            f" {num_hidden_layers(model)} layers x top-{model.top_k} int32 for {model.name!r};"
            " wrong --model?"
        )
    arr = np.frombuffer(raw, dtype="<i4").reshape(-1, num_hidden_layers(model), model.top_k)
    return moe_rows(arr, model, where).astype(np.int64)


def encode_sglang_routed(experts: np.ndarray, model: ModelSpec) -> str:
    """The inverse of :func:`decode_sglang_routed` (dense layers written as 0, as SGLang does)."""
    full = np.zeros((experts.shape[0], num_hidden_layers(model), model.top_k), dtype="<i4")
    full[:, list(model.moe_layer_indices), :] = experts
    return base64.b64encode(full.tobytes()).decode("ascii")


def _sglang_arrays(path: Path, model: ModelSpec) -> Iterator[tuple[str, np.ndarray]]:
    for where, obj in iter_json_records(path):
        meta = obj.get("meta_info") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or "routed_experts" not in meta:
            raise InputError(
                f"{where}: no meta_info.routed_experts; was the request sent with"
                " return_routed_experts=true to a server started with"
                " --enable-return-routed-experts?"
            )
        yield where, decode_sglang_routed(meta["routed_experts"], model, where)


def _vllm_arrays(path: Path, model: ModelSpec) -> Iterator[tuple[str, np.ndarray]]:
    for where, obj in iter_json_records(path):
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices:
            raise InputError(f"{where}: no 'choices' list (an OpenAI-style vLLM response?)")
        for c, choice in enumerate(choices):
            here = f"{where}, choice {c}"
            value = choice.get("routed_experts") if isinstance(choice, dict) else None
            if value is None:
                raise InputError(
                    f"{here}: routed_experts is missing or null; start vLLM with"
                    " --enable-return-routed-experts"
                )
            try:
                arr = np.asarray(value, dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                raise InputError(
                    f"{here}: routed_experts must be integer [tokens][layers][k]"
                ) from None
            if arr.ndim != 3 or arr.shape[2] != model.top_k:
                raise InputError(
                    f"{here}: routed_experts has shape {list(arr.shape)}, expected"
                    f" [tokens, layers, top_k={model.top_k}] for {model.name!r}"
                )
            yield here, moe_rows(arr, model, here)


def iter_api_responses(
    fmt: str,
    source: str | Path,
    model: ModelSpec,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    physical_to_logical_map: np.ndarray | None = None,
) -> Iterator[RoutingTrace]:
    """Stream ``sglang-routed`` or ``vllm-routed`` responses as trace blocks."""
    source = Path(source)
    arrays = _sglang_arrays if fmt == "sglang-routed" else _vllm_arrays
    meta = TraceMeta(
        model=model,
        source=f"{fmt} responses {source}",
        produced_by=f"moe-netsim trace import --format {fmt}",
    )
    pmap_moe = (
        None
        if physical_to_logical_map is None
        else physical_to_logical_map[list(model.moe_layer_indices)]
    )
    builder = BlockBuilder(meta, chunk_tokens)
    seq = 0
    for where, arr in arrays(source, model):
        if arr.shape[0] == 0:
            continue
        if pmap_moe is not None:
            arr = physical_to_logical(arr, pmap_moe, where)
        check_routes(arr, model, where)
        n = arr.shape[0]
        yield from builder.add(
            arr,
            seq_id=np.full(n, seq, dtype=np.int64),
            position=np.arange(n, dtype=np.int32),
        )
        seq += 1
    if seq == 0:
        raise InputError(f"{source}: no response holds any routed token")
    yield from builder.finish()


def write_api_responses(fmt: str, blocks: Iterator[RoutingTrace], path: Path) -> int:
    """One response per sequence, as JSONL (``sglang-routed`` or ``vllm-routed``)."""
    count = 0
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for seq_id, experts, model in sequence_runs(blocks):
            if fmt == "sglang-routed":
                obj: dict[str, Any] = {
                    "meta_info": {
                        "id": str(seq_id),
                        "routed_experts": encode_sglang_routed(experts, model),
                    }
                }
            else:
                full = np.zeros((len(experts), num_hidden_layers(model), model.top_k), np.int64)
                full[:, list(model.moe_layer_indices)] = experts
                obj = {
                    "id": str(seq_id),
                    "choices": [{"index": 0, "routed_experts": full.tolist()}],
                }
            fh.write(json.dumps(obj) + "\n")
            count += len(experts)
    return count
