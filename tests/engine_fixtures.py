"""Engine files written the way the engines write them (from reading their sources).

Each builder writes what the engine's own dumping code writes, independently of the project's
exporters, so the importers are tested against the engines' layout, not against themselves.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from traces.model import ModelSpec


def tiny_v3(layers: int = 3, experts: int = 16, top_k: int = 4) -> ModelSpec:
    """A DeepSeek-V3-shaped toy: transformer layer 0 dense, MoE layers 1..layers."""
    return ModelSpec("tiny-v3", tuple(range(1, layers + 1)), experts, 1, top_k, 32, 4, 2)


def sglang_per_token_dump(
    folder: Path,
    model: ModelSpec,
    passes: list[dict[int, list[int]]],
    pmap: np.ndarray,
    rng: np.random.Generator,
    gatherer_key: str = "primary",
) -> dict[tuple[int, int], np.ndarray]:
    """``expert_distribution_recorder_<t>_<rank>.pt`` files as SGLang's _DetailAccumulator does.

    ``passes[p][rank]`` = the extend sequence lengths of that rank in pass p.  Returns the
    logical ids [tokens, moe_layers, k] written for each (pass, rank).
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    hidden = max(model.moe_layer_indices) + 1
    physical = pmap.shape[1]
    copies = [
        [np.flatnonzero(pmap[layer] == e) for e in range(model.num_routed_experts)]
        for layer in range(hidden)
    ]
    records: dict[int, list[dict]] = {}
    logical_out = {}
    for pass_id, per_rank in enumerate(passes):
        for rank, lens in per_rank.items():
            tokens = int(sum(lens))
            ids = torch.full((hidden, tokens, 8), -1, dtype=torch.int32)  # reset() fills -1
            logical = (
                np.stack(
                    [
                        np.stack(
                            [
                                rng.choice(model.num_routed_experts, model.top_k, replace=False)
                                for _ in range(tokens)
                            ]
                        )
                        for _ in model.moe_layer_indices
                    ],
                    axis=1,
                )
                if tokens
                else np.zeros((0, model.num_moe_layers, model.top_k), np.int64)
            )
            for li, layer in enumerate(model.moe_layer_indices):
                for t in range(tokens):
                    phys = [int(rng.choice(copies[layer][e])) for e in logical[t, li]]
                    ids[layer, t, : model.top_k] = torch.tensor(phys, dtype=torch.int32)
            assert physical > 0
            records.setdefault(rank, []).append(
                dict(
                    forward_pass_id=pass_id,
                    rank=rank,
                    gatherer_key=gatherer_key,
                    input_ids=[int(x) for x in rng.integers(0, 1000, tokens)],
                    positions=[p for n in lens for p in range(n)],
                    extend_seq_lens=list(lens),
                    forward_mode=1,
                    topk_ids_of_layer=ids,
                    misc_objects=[],
                )
            )
            logical_out[(pass_id, rank)] = logical
    for rank, recs in records.items():
        torch.save(
            {"records": recs, "last_physical_to_logical_map": torch.from_numpy(pmap)},
            folder / f"expert_distribution_recorder_1765432100.5_{rank}.pt",
        )
    return logical_out


def sglang_response(experts: np.ndarray, model: ModelSpec) -> dict:
    """A /generate response as SGLang's tokenizer manager returns it (base64 int32)."""
    hidden = max(model.moe_layer_indices) + 1
    full = np.zeros((experts.shape[0], hidden, model.top_k), dtype=np.int32)
    full[:, list(model.moe_layer_indices)] = experts
    return {
        "text": "...",
        "meta_info": {
            "id": "r",
            "prompt_tokens": experts.shape[0],
            "routed_experts": base64.b64encode(full.tobytes()).decode(),
        },
    }


def vllm_response(experts: np.ndarray, model: ModelSpec) -> dict:
    """An OpenAI-style vLLM response with choices[0].routed_experts as nested lists."""
    hidden = max(model.moe_layer_indices) + 1
    full = np.zeros((experts.shape[0], hidden, model.top_k), dtype=np.int16)
    full[:, list(model.moe_layer_indices)] = experts
    return {"id": "cmpl", "choices": [{"index": 0, "text": "...", "routed_experts": full.tolist()}]}


def trtllm_stats(
    folder: Path, model: ModelSpec, batches: dict[tuple[int, int], np.ndarray]
) -> None:
    """What ExpertStatistic._write leaves: meta_info.json, rank<N>[_raw].safetensors.

    ``batches[(iteration, rank)]`` = token_selected_experts [tokens, moe_layers, k].
    """
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta_info.json").write_text(
        json.dumps({"num_experts": model.num_routed_experts, "num_experts_per_token": model.top_k})
    )
    ranks = sorted({r for _, r in batches})
    for r in range(max(ranks) + 1):
        raw, counts = {}, {}
        for (it, rank), sel in batches.items():
            if rank != r:
                continue
            for li, layer in enumerate(model.moe_layer_indices):
                key = f"{it}_{layer}"
                raw[key] = sel[:, li].astype(np.int32)
                counts[key] = np.bincount(sel[:, li].ravel(), minlength=model.num_routed_experts)
        save_file(counts, str(folder / f"rank{r}.safetensors"))
        save_file(raw, str(folder / f"rank{r}_raw.safetensors"))


def routes(rng: np.random.Generator, tokens: int, model: ModelSpec) -> np.ndarray:
    """Random valid routing [tokens, moe_layers, top_k]: distinct experts per token and layer."""
    keys = rng.random((tokens, model.num_moe_layers, model.num_routed_experts))
    return np.argsort(keys, axis=2)[..., : model.top_k].astype(np.int64)
