"""The recorder on tiny randomly initialised DeepSeek-V3 / V2 models (no downloads).

Skipped when the [record] extra (torch, transformers) is not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments.cli import main  # noqa: E402
from traces import read_trace  # noqa: E402
from traces.infra.errors import InputError  # noqa: E402
from traces.recorder import (  # noqa: E402
    byte_token_ids,
    load_model,
    moe_layers,
    record_routing,
    tokenize_file,
)

TINY = {
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 64,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "max_position_embeddings": 256,
}
V3 = {**TINY, "model_type": "deepseek_v3", "n_group": 4, "topk_group": 2}
V2 = {**TINY, "model_type": "deepseek_v2", "topk_method": "greedy"}
TEXT = "Mixture-of-Experts routing, recorded with forward hooks. " * 6  # 342 bytes


def _config(tmp_path, d, name="config.json"):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def _gate_inputs(loaded):
    """Hooks of our own that keep what every router was called with."""
    seen: dict[int, list] = {}
    handles = []
    for li, (_, mlp) in enumerate(moe_layers(loaded.model)):
        def keep(module, inputs, li=li):
            seen.setdefault(li, []).append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]))
        handles.append(mlp.gate.register_forward_pre_hook(keep))
    return seen, handles


def _v3_topk(h: np.ndarray, gate) -> np.ndarray:
    """Independent numpy DeepSeek-V3 routing: sigmoid scores + bias, best 2 per group summed,
    top groups, then top-k inside them."""
    w = gate.weight.detach().numpy().astype(np.float64)
    bias = gate.e_score_correction_bias.detach().numpy().astype(np.float64)
    s = 1 / (1 + np.exp(-(h.astype(np.float64) @ w.T))) + bias
    n, e = s.shape
    g = gate.num_group
    grouped = s.reshape(n, g, e // g)
    gscore = np.sort(grouped, axis=2)[:, :, -2:].sum(axis=2)
    keep = np.argsort(-gscore, axis=1)[:, : gate.topk_group]
    mask = np.full((n, g), -np.inf)
    np.put_along_axis(mask, keep, 0.0, axis=1)
    s = (grouped + mask[:, :, None]).reshape(n, e)
    return np.sort(np.argsort(-s, axis=1)[:, : gate.top_k], axis=1)


@pytest.mark.parametrize("cfg", [V3, V2], ids=["v3", "v2"])
def test_recorded_ids_are_the_routers_top_k(tmp_path, cfg):
    loaded = load_model(config_path=_config(tmp_path, cfg), seed=1)
    spec = loaded.spec
    assert spec.moe_layer_indices == (1, 2) and spec.num_routed_experts == 16
    assert spec.top_k == 4
    assert (spec.num_expert_groups, spec.topk_groups) == ((4, 2) if cfg is V3 else (1, 1))
    ids = byte_token_ids(TEXT, 300)
    seen, handles = _gate_inputs(loaded)
    blocks = list(record_routing(loaded, ids, seq_len=64, batch_sequences=2))
    for h in handles:
        h.remove()
    # 342 tokens: batches of 2 x 64 (two), then 1 x 64, then the 22-token tail alone
    assert [b.num_tokens for b in blocks] == [128, 128, 64, 22]
    assert [int(b.step[0]) for b in blocks] == [0, 1, 2, 3]
    rec = np.concatenate([b.experts for b in blocks]).astype(int)
    assert rec.shape == (342, 2, 4)
    seq = np.concatenate([b.seq_id for b in blocks])
    pos = np.concatenate([b.position for b in blocks])
    np.testing.assert_array_equal(seq * 64 + pos, np.arange(342))
    for li, (_, mlp) in enumerate(moe_layers(loaded.model)):
        hidden = torch.cat(seen[li])
        with torch.no_grad():
            _, weights, own = mlp.gate(hidden)  # the router's own top-k, called again
        np.testing.assert_array_equal(np.sort(rec[:, li], axis=1), np.sort(own.numpy(), axis=1))
        gates = np.concatenate([b.gates for b in blocks])[:, li]
        np.testing.assert_allclose(
            np.sort(gates, axis=1), np.sort(weights.numpy(), axis=1), rtol=1e-6
        )
        if cfg is V3:
            np.testing.assert_array_equal(
                np.sort(rec[:, li], axis=1), _v3_topk(hidden.numpy(), mlp.gate)
            )
            assert (np.diff(np.sort(rec[:, li] // 4, axis=1), axis=1) != 0).sum(1).max() < 2


def test_record_command_writes_a_native_trace(tmp_path, capsys):
    cfg = _config(tmp_path, V3)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    out = tmp_path / "rec.parquet"
    args = ["trace", "record", "--config", str(cfg), "--text", str(text), "--out", str(out),
            "--seq-len", "50", "--max-tokens", "120", "--seed", "3"]
    assert main(args) == 0
    tr = read_trace(out)
    assert tr.num_tokens == 120 and tr.origin_gpu is None and tr.gates is not None
    assert tr.meta.model.moe_layer_indices == (1, 2)
    assert "recorded" in tr.meta.source and "utf-8 bytes" in tr.meta.produced_by
    # same seed, same weights, same routing
    loaded = load_model(config_path=cfg, seed=3)
    again = np.concatenate(
        [b.experts for b in record_routing(loaded, tokenize_file(text, loaded, 120), 50)]
    )
    np.testing.assert_array_equal(np.sort(again, 2), np.sort(tr.experts, 2))
    assert main(args) == 2  # exists without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    # --dp-ranks records origins: 120 tokens = sequences of 50, 50 (one pass of --batch 4 that
    # holds two full sequences) and the 20-token tail alone -> ranks 0, 1, then 0
    ranked = tmp_path / "ranked.parquet"
    assert main([*args[:7], str(ranked), *args[8:], "--dp-ranks", "2"]) == 0
    tr = read_trace(ranked)
    assert tr.origin_gpu.tolist() == [0] * 50 + [1] * 50 + [0] * 20
    assert tr.step.tolist() == [0] * 100 + [1] * 20


def test_model_directory_round_trip(tmp_path):
    random = load_model(config_path=_config(tmp_path, V3), seed=4)
    random.model.save_pretrained(tmp_path / "m")
    local = load_model(model_dir=tmp_path / "m")
    assert local.spec.moe_layer_indices == random.spec.moe_layer_indices
    assert local.tokenizer is None  # no tokenizer files: UTF-8 byte ids
    ids = byte_token_ids(TEXT, 300)[:100]
    a = next(record_routing(random, ids, seq_len=100)).experts
    b = next(record_routing(local, ids, seq_len=100)).experts
    np.testing.assert_array_equal(np.sort(a, 2), np.sort(b, 2))


def test_bad_recorder_input(tmp_path):
    with pytest.raises(InputError, match="model_type"):
        load_model(config_path=_config(tmp_path, {**TINY, "model_type": "llama"}))
    with pytest.raises(InputError, match="config.json missing"):
        load_model(model_dir=tmp_path / "nowhere")
    loaded = load_model(config_path=_config(tmp_path, V2))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="no tokens"):
        tokenize_file(empty, loaded)
