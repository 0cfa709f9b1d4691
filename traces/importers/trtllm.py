"""TensorRT-LLM expert statistics (``EXPERT_STATISTIC_PATH``), counts and raw selections.

Follows TensorRT-LLM's ``tensorrt_llm/tools/.../expert_statistic.py`` and the
``examples/wide_ep/ep_load_balancer`` readers (main branch, 2026): with
``EXPERT_STATISTIC_ITER_RANGE=a-b`` every rank writes into the folder

- ``meta_info.json`` (rank 0): ``{"num_experts": E, "num_experts_per_token": k, ...}``;
- ``rank<N>.safetensors``: per key ``"<iteration>_<layer>"`` the routed-token counts [E] of the
  tokens rank N served (``layer`` is the transformer layer index);
- ``rank<N>_raw.safetensors`` (newer builds): per key the raw ``token_selected_experts``
  [tokens, k] of rank N in that iteration and layer.

Counts become load statistics (summed over ranks and iterations); raw selections become a trace
with origin = the rank and step = the iteration.  The raw dump records no requests: the tokens
of one (iteration, rank) batch are one sequence, in the order the engine listed them.
Safetensors are read without torch (``safetensors.numpy``), one tensor at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from traces.importers.common import BlockBuilder, check_routes, rank_step_groups
from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.infra.jsonfile import read_json_file
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.load_stats import LoadStats
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta

RANK_FILE = re.compile(r"^rank(\d+)(_raw)?\.safetensors$")
KEY = re.compile(r"^(\d+)_(\d+)$")


def _rank_files(folder: Path, raw: bool) -> dict[int, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: expected the EXPERT_STATISTIC_PATH folder")
    files = {}
    for p in folder.iterdir():
        m = RANK_FILE.match(p.name)
        if m and bool(m.group(2)) == raw:
            files[int(m.group(1))] = p
    if not files:
        kind = "rank<N>_raw.safetensors" if raw else "rank<N>.safetensors"
        raise InputError(f"{folder}: holds no {kind} files")
    missing = sorted(set(range(max(files) + 1)) - set(files))
    if missing:
        raise InputError(f"{folder}: ranks missing from the statistics: {missing[:8]}")
    return dict(sorted(files.items()))


def has_raw(folder: Path) -> bool:
    return folder.is_dir() and any(
        RANK_FILE.match(p.name) and "_raw" in p.name for p in folder.iterdir()
    )


def check_meta(folder: Path, model: ModelSpec) -> dict[str, object]:
    meta = read_json_file(folder / "meta_info.json", "TensorRT-LLM meta_info.json")
    if not isinstance(meta, dict):
        raise InputError(f"{folder / 'meta_info.json'}: expected a JSON object")
    for key, want in (
        ("num_experts", model.num_routed_experts),
        ("num_experts_per_token", model.top_k),
    ):
        if key in meta and meta[key] != want:
            raise InputError(
                f"{folder / 'meta_info.json'}: {key} = {meta[key]!r}, but model {model.name!r} has"
                f" {want}; wrong --model?"
            )
    return meta


def _open(path: Path):  # noqa: ANN202 - safetensors' handle type is private
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="np")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None


def _keys(handle, path: Path, model: ModelSpec) -> list[tuple[int, int, str]]:  # noqa: ANN001
    """(iteration, MoE layer position, key) sorted; keys of dense or unknown layers refused."""
    pos = {layer: i for i, layer in enumerate(model.moe_layer_indices)}
    out = []
    for key in handle.keys():
        m = KEY.match(key)
        if not m:
            raise InputError(f"{path}: key {key!r} is not '<iteration>_<layer>'")
        layer = int(m.group(2))
        if layer not in pos:
            raise InputError(
                f"{path}: key {key!r}: layer {layer} is not a MoE layer of {model.name!r}"
                f" ({model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]}); wrong --model?"
            )
        out.append((int(m.group(1)), pos[layer], key))
    return sorted(out)


def read_trtllm_counts(source: str | Path, model: ModelSpec) -> LoadStats:
    """``rank<N>.safetensors`` counts summed over ranks and iterations."""
    folder = Path(source)
    check_meta(folder, model)
    total = np.zeros((model.num_moe_layers, model.num_routed_experts))
    for path in _rank_files(folder, raw=False).values():
        with _open(path) as h:
            for _it, li, key in _keys(h, path, model):
                counts = h.get_tensor(key)
                if counts.shape != (model.num_routed_experts,) or not np.issubdtype(
                    counts.dtype, np.integer
                ):
                    raise InputError(
                        f"{path}: {key}: counts of shape {list(counts.shape)} ({counts.dtype}),"
                        f" expected [{model.num_routed_experts}] integers"
                    )
                total[li] += counts
    return LoadStats(model=model, counts=total, source=str(folder))


def iter_trtllm_raw(
    source: str | Path, model: ModelSpec, chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS
) -> Iterator[RoutingTrace]:
    """``rank<N>_raw.safetensors`` as trace blocks, in (iteration, rank) order."""
    folder = Path(source)
    check_meta(folder, model)
    files = _rank_files(folder, raw=True)
    # One handle per rank file for the whole import: opening parses the file's whole header,
    # which costs more than reading a batch.  Tensors are copied out per batch (the heap stays
    # bounded by the chunk); the mapped file pages count in RSS but the kernel can drop them.
    handles = {r: _open(path) for r, path in files.items()}
    index: dict[tuple[int, int], dict[int, str]] = {}
    for r, path in files.items():
        for it, li, key in _keys(handles[r], path, model):
            index.setdefault((it, r), {})[li] = key
    meta = TraceMeta(
        model=model,
        source=f"TensorRT-LLM raw expert statistics {folder}",
        produced_by="moe-netsim trace import --format trtllm",
        extra={"origin_model": "recorded: the rank that served the token"},
    )
    builder = BlockBuilder(meta, chunk_tokens)
    for seq, ((it, r), keys) in enumerate(sorted(index.items())):
        where = f"{files[r]}: iteration {it}"
        if len(keys) != model.num_moe_layers:
            missing = sorted(set(range(model.num_moe_layers)) - set(keys))
            raise InputError(f"{where}: MoE layer {model.moe_layer_indices[missing[0]]} missing")
        per_layer = [handles[r].get_tensor(keys[li]) for li in range(model.num_moe_layers)]
        shapes = {a.shape for a in per_layer}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InputError(f"{where}: layers hold different token counts or are not [tokens, k]")
        experts = np.stack(per_layer, axis=1).astype(np.int64)
        if experts.shape[2] != model.top_k:
            raise InputError(f"{where}: k = {experts.shape[2]}, model routes top-{model.top_k}")
        check_routes(experts, model, where)
        n = experts.shape[0]
        yield from builder.add(
            experts,
            seq_id=np.full(n, seq, dtype=np.int64),
            position=np.arange(n, dtype=np.int32),
            origin_gpu=np.full(n, r, dtype=np.int32),
            step=np.full(n, it, dtype=np.int32),
        )
    yield from builder.finish()


def write_trtllm_stats(blocks: Iterator[RoutingTrace], folder: Path) -> int:
    """Write ``meta_info.json``, ``rank<N>.safetensors`` and ``rank<N>_raw.safetensors``.

    Rank = origin GPU (0 where not recorded), iteration = step (0 where not recorded).  Tokens of
    one (iteration, rank) keep their trace order.
    """
    raw: dict[int, dict[str, list[np.ndarray]]] = {}
    model: ModelSpec | None = None
    count = 0
    for b in blocks:
        model = b.meta.model
        for r, it, sel in rank_step_groups(b):
            for li, layer in enumerate(model.moe_layer_indices):
                raw.setdefault(r, {}).setdefault(f"{it}_{layer}", []).append(
                    b.experts[sel, li].astype(np.int32)
                )
        count += b.num_tokens
    if model is None:
        raise InputError(f"{folder}: the trace holds no tokens; nothing written")
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"num_experts": model.num_routed_experts, "num_experts_per_token": model.top_k}
    with atomic_output(folder / "meta_info.json") as tmp:
        tmp.write_text(json.dumps(meta) + "\n")
    for r in range(max(raw) + 1):
        tensors = {k: np.concatenate(v) for k, v in raw.get(r, {}).items()}
        counts = {
            k: np.bincount(v.ravel(), minlength=model.num_routed_experts).astype(np.int64)
            for k, v in tensors.items()
        }
        for name, data in ((f"rank{r}_raw.safetensors", tensors), (f"rank{r}.safetensors", counts)):
            with atomic_output(folder / name) as tmp:
                save_file(data, str(tmp))
    return count
