"""Record expert routing of a Hugging Face transformers DeepSeek-V2/V3 model with forward hooks.

Needs the optional extra ``[record]`` (torch and transformers); importing this module without
them raises ImportError.  Nothing is downloaded: a model comes from a local directory or is
built with random weights from a ``config.json``.

Every MoE layer of these models calls its router (``mlp.gate``), which returns
``(router_logits, topk_weights, topk_indices)``; the MLP then feeds exactly those indices to
its experts.  A forward hook on each router copies the indices (and weights) out, so the
trace holds what the model really used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.trace import RoutingTrace, TraceMeta, expert_dtype

SUPPORTED_MODEL_TYPES = ("deepseek_v2", "deepseek_v3")


@dataclass(frozen=True, slots=True, eq=False)
class LoadedModel:
    """A model ready to record: the torch module, its routing geometry and its tokenizer."""

    model: Any  # transformers PreTrainedModel
    spec: ModelSpec
    tokenizer: Any | None  # None: UTF-8 byte ids
    source: str


def moe_layers(model: Any) -> list[tuple[int, Any]]:
    """(transformer layer index, MoE module) for every layer whose MLP routes to experts."""
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise InputError("recorder: model has no .model.layers (not a DeepSeek-V2/V3 model)")
    return [
        (i, layer.mlp)
        for i, layer in enumerate(layers)
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")
    ]


def spec_from_model(model: Any, name: str) -> ModelSpec:
    """Routing geometry from a transformers DeepSeek-V2/V3 model and its config."""
    cfg = model.config
    if cfg.model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            f"recorder: model_type {cfg.model_type!r} is not supported;"
            f" expected one of {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    moe = moe_layers(model)
    if not moe:
        raise InputError("recorder: the model has no MoE layers")
    grouped = cfg.model_type == "deepseek_v3" or getattr(cfg, "topk_method", "") == (
        "group_limited_greedy"
    )
    n_group = int(getattr(cfg, "n_group", None) or 1) if grouped else 1
    topk_group = int(getattr(cfg, "topk_group", None) or 1) if grouped else 1
    return ModelSpec(
        name=name,
        moe_layer_indices=tuple(i for i, _ in moe),
        num_routed_experts=int(cfg.n_routed_experts),
        num_shared_experts=int(cfg.n_shared_experts or 0),
        top_k=int(cfg.num_experts_per_tok),
        hidden_size=int(cfg.hidden_size),
        num_expert_groups=n_group,
        topk_groups=topk_group,
        moe_intermediate_size=int(cfg.moe_intermediate_size or 0),
    )


def load_model(
    model_dir: str | os.PathLike[str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> LoadedModel:
    """A local model directory (weights, optional tokenizer) or random weights from a config."""
    if (model_dir is None) == (config_path is None):
        raise InputError("recorder: give exactly one of a model directory or a config file")
    if config_path is not None:
        p = Path(config_path)
        if not p.is_file():
            raise InputError(f"{p}: config file not found")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{p}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("model_type") not in SUPPORTED_MODEL_TYPES:
            raise InputError(
                f"{p}: 'model_type' must be one of {', '.join(SUPPORTED_MODEL_TYPES)},"
                f" got {d.get('model_type') if isinstance(d, dict) else None!r}"
            )
        kind = d.pop("model_type")
        try:
            cfg = transformers.AutoConfig.for_model(kind, **d)
            torch.manual_seed(seed)
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{p}: cannot build a {kind} model from this config ({exc})") from None
        name, source, tokenizer = f"{kind}-random", f"{p} (random weights, seed {seed})", None
    else:
        p = Path(model_dir)  # type: ignore[arg-type]
        if not (p / "config.json").is_file():
            raise InputError(f"{p}: not a model directory (config.json missing)")
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot load the model locally ({exc})") from None
        tokenizer = None
        if any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(p, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise InputError(f"{p}: cannot load its tokenizer ({exc})") from None
        name, source = p.name, str(p)
    model.eval()
    spec = spec_from_model(model, name)
    return LoadedModel(model=model, spec=spec, tokenizer=tokenizer, source=source)


def byte_token_ids(text: str, vocab_size: int) -> np.ndarray:
    """Fallback tokenisation without a tokenizer: the UTF-8 bytes, modulo the vocabulary."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) % vocab_size


def tokenize_file(
    path: str | os.PathLike[str], loaded: LoadedModel, max_tokens: int | None = None
) -> np.ndarray:
    """Token ids of a UTF-8 text file (the model's tokenizer if it has one, else bytes)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: text file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc})") from None
    if loaded.tokenizer is not None:
        ids = np.asarray(loaded.tokenizer(text)["input_ids"], dtype=np.int64)
    else:
        ids = byte_token_ids(text, int(loaded.model.config.vocab_size))
    if max_tokens is not None:
        if max_tokens < 1:
            raise InputError("recorder: max_tokens must be >= 1")
        ids = ids[:max_tokens]
    if ids.size == 0:
        raise InputError(f"{p}: no tokens (empty text)")
    return ids


class _Capture:
    """Forward hooks on every MoE router that keep the last call's expert ids and weights."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.ids: dict[int, torch.Tensor] = {}
        self.weights: dict[int, torch.Tensor] = {}
        self._handles = [
            mlp.gate.register_forward_hook(self._hook(li))
            for li, (_, mlp) in enumerate(moe_layers(loaded.model))
        ]

    def _hook(self, li: int):  # noqa: ANN202
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if not (isinstance(output, tuple) and len(output) == 3):
                raise InputError(
                    "recorder: this transformers version's router does not return"
                    " (logits, weights, indices); use transformers >= 5.24"
                )
            _, weights, indices = output
            self.ids[li] = indices.detach().to("cpu")
            self.weights[li] = weights.detach().to("cpu", torch.float32)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def record_routing(
    loaded: LoadedModel,
    token_ids: np.ndarray,
    seq_len: int = 512,
    batch_sequences: int = 4,
    gates: bool = True,
    dp_ranks: int | None = None,
) -> Iterator[RoutingTrace]:
    """Run the model over ``token_ids`` cut into sequences of ``seq_len``; one block per batch.

    Sequence s holds tokens [s * seq_len, (s + 1) * seq_len); a batch of
    ``batch_sequences`` sequences is one step.  The last sequence may be shorter (it runs
    in a batch of its own so that no padding enters the routing).  With ``dp_ranks`` N the
    trace records origins as a data-parallel-attention deployment does: the j-th sequence of a
    step is served on rank j mod N (as an engine's dump records the rank of each token).
    """
    if seq_len < 1 or batch_sequences < 1:
        raise InputError("recorder: seq_len and batch_sequences must be >= 1")
    if dp_ranks is not None and dp_ranks < 1:
        raise InputError("recorder: dp_ranks must be >= 1")
    spec = loaded.spec
    meta = TraceMeta(
        model=spec,
        source=f"recorded: {loaded.source}",
        produced_by=(
            f"moe-netsim record: transformers {transformers.__version__}, torch"
            f" {torch.__version__}, seq_len={seq_len}, batch={batch_sequences},"
            f" tokenizer={'model' if loaded.tokenizer is not None else 'utf-8 bytes'}"
        ),
    )
    n = int(token_ids.size)
    full = n // seq_len
    batches: list[tuple[int, int, int]] = []  # (first token, sequences, length)
    for s in range(0, full, batch_sequences):
        batches.append((s * seq_len, min(batch_sequences, full - s), seq_len))
    if n % seq_len:
        batches.append((full * seq_len, 1, n % seq_len))
    cap = _Capture(loaded)
    dtype = expert_dtype(spec.num_routed_experts)
    try:
        for step, (start, nseq, length) in enumerate(batches):
            chunk = torch.as_tensor(token_ids[start : start + nseq * length]).view(nseq, length)
            cap.ids.clear()
            with torch.no_grad():
                loaded.model(input_ids=chunk, use_cache=False)
            if len(cap.ids) != spec.num_moe_layers:
                raise InputError(
                    f"recorder: captured {len(cap.ids)} of {spec.num_moe_layers} MoE layers"
                )
            tokens = nseq * length
            layers = range(spec.num_moe_layers)
            experts = np.stack(
                [cap.ids[li].numpy().reshape(tokens, -1) for li in layers], axis=1
            ).astype(dtype)
            w = None
            if gates:
                w = np.stack([cap.weights[li].numpy().reshape(tokens, -1) for li in layers], 1)
            seq0 = start // seq_len
            yield RoutingTrace(
                meta=meta,
                experts=experts,
                seq_id=np.repeat(np.arange(seq0, seq0 + nseq, dtype=np.int64), length),
                position=np.tile(np.arange(length, dtype=np.int32), nseq),
                step=np.full(tokens, step, dtype=np.int32),
                origin_gpu=None
                if dp_ranks is None
                else np.repeat(np.arange(nseq, dtype=np.int32) % dp_ranks, length),
                gates=w,
            )
    finally:
        cap.close()
