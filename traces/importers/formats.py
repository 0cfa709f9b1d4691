"""The import and export formats and what each reads or writes.

Plain tables without imports, so that the command line lists them in ``--help`` without
loading pyarrow or an importer.
"""

# Formats whose input is routing per token (a trace), and what each reads.
TRACE_FORMATS = {
    "esft": "a folder of expert_weights_<L>.txt (DeepSeek ESFT expert-score logs)",
    "vllm": "int arrays [tokens, layers, top_k] per request (.npy, .npz or a folder)",
    "table": "a long CSV or Parquet table: token, layer, rank, expert (+ optional columns)",
    "sglang-dump": "SGLang expert distribution recorder dump folder (per_token mode)",
    "sglang-routed": "SGLang /generate responses with meta_info.routed_experts (.json/.jsonl)",
    "vllm-routed": "vLLM OpenAI-style responses with choices[].routed_experts (.json/.jsonl)",
    "trtllm": "TensorRT-LLM EXPERT_STATISTIC_PATH folder with rank<N>_raw.safetensors",
    "megatron": "Megatron-Core router replay routing_indices (.pt/.npy file or folder)",
    "topk-parquet": "Parquet of per-token top-k indices (+ scores), wide or long",
}
# Formats (or modes of them) that hold counts only: imported as load statistics.
COUNT_FORMATS = {
    "sglang": "SGLang logical_count JSON",
    "sglang-dump": "SGLang recorder dump in stat or per_pass mode",
    "trtllm": "TensorRT-LLM EXPERT_STATISTIC_PATH folder with rank<N>.safetensors counts only",
}

# name -> (what it writes, whether the output is a folder)
EXPORT_FORMATS: dict[str, tuple[str, bool]] = {
    "sglang-dump": ("SGLang per_token recorder dump, one .pt per rank (needs torch)", True),
    "sglang-routed": ("SGLang /generate responses with meta_info.routed_experts (.jsonl)", False),
    "sglang-logical-count": (
        "SGLang logical_count JSON (counts, for --init-expert-location)",
        False,
    ),
    "vllm": ("vLLM routed_experts int16 arrays, one per sequence (.npz)", False),
    "vllm-routed": ("vLLM OpenAI-style responses with choices[].routed_experts (.jsonl)", False),
    "trtllm": ("TensorRT-LLM EXPERT_STATISTIC_PATH folder (counts and raw)", True),
    "megatron": ("Megatron-Core router replay, one step<S>.pt per step (needs torch)", True),
    "topk-parquet": ("Parquet, one row per token: seq_id, position, topk_indices[, scores]", False),
}
