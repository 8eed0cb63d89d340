"""The GGUF loader on small synthetic qwen2 / qwen3 / llama files written with mx.save_gguf:
tensor names map onto mlx-lm's modules and the loaded model computes what mlx-lm's own model
computes with the same weights (llama with llama.cpp's Q/K permutation undone by
rope_traditional)."""

import importlib

import mlx.core as mx
import numpy as np
import pytest

from niah.gguf import load_gguf_model

VOCAB = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [chr(c) for c in range(97, 123)]
    + ["Ġ", "Ġa", "ab"]
)
MERGES = ["Ġ a", "a b"]


def _meta(arch: str) -> dict:
    m = {
        "general.architecture": arch,
        "general.name": f"tiny-{arch}",
        f"{arch}.embedding_length": mx.array(64, dtype=mx.uint32),
        f"{arch}.block_count": mx.array(2, dtype=mx.uint32),
        f"{arch}.feed_forward_length": mx.array(96, dtype=mx.uint32),
        f"{arch}.attention.head_count": mx.array(4, dtype=mx.uint32),
        f"{arch}.attention.head_count_kv": mx.array(2, dtype=mx.uint32),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(1e-6, dtype=mx.float32),
        f"{arch}.rope.freq_base": mx.array(10000.0, dtype=mx.float32),
        f"{arch}.context_length": mx.array(2048, dtype=mx.uint32),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2" if arch != "llama" else "smollm",
        "tokenizer.ggml.tokens": VOCAB,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.token_type": mx.array([3, 3, 3] + [1] * (len(VOCAB) - 3), dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": mx.array(1, dtype=mx.uint32),
        "tokenizer.ggml.eos_token_id": mx.array(2, dtype=mx.uint32),
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}",
    }
    if arch == "qwen3":
        m[f"{arch}.attention.key_length"] = mx.array(16, dtype=mx.uint32)
    return m


def _permute_for_llamacpp(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert permutes Q/K rows from rotate-half to interleaved RoPE order."""
    out_dim, in_dim = w.shape
    return (
        w.reshape(heads, 2, out_dim // heads // 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)
    )


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_synthetic_gguf_matches_mlx_lm(arch, tmp_path):
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    args = dict(
        model_type=arch,
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=len(VOCAB),
        rope_theta=10000.0,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        head_dim=16,
    )
    if arch == "qwen3":
        args["head_dim"] = 16
    ref = module.Model(module.ModelArgs.from_dict(args))
    mx.eval(ref.parameters())
    from mlx.utils import tree_flatten

    names = {
        "embed_tokens": "token_embd",
        "norm": "output_norm",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    tensors = {}
    for path, value in tree_flatten(ref.parameters()):
        parts = path.split(".")
        kind = parts[-1]
        if parts[1] == "layers":
            layer, sub = parts[2], ".".join(parts[3:-1])
            name = f"blk.{layer}.{names[sub]}.{kind}"
        else:
            name = f"{names[parts[1]]}.{kind}"
        w = np.array(value)
        if arch == "llama" and kind == "weight" and sub_in(path, ("q_proj", "k_proj")):
            heads = 4 if "q_proj" in path else 2
            w = _permute_for_llamacpp(w, heads)
        tensors[name] = mx.array(w)
    path = tmp_path / f"tiny-{arch}.gguf"
    mx.save_gguf(str(path), tensors, _meta(arch))

    model, tok, info = load_gguf_model(path)
    assert info.architecture == arch and info.n_kv_heads == 2 and info.trained_context == 2048
    ids = mx.array([[1, 5, 7, 9, 11, 30, 2]])
    a, b = model(ids), ref(ids)
    assert mx.abs(a - b).max().item() < 1e-4
    assert tok.encode("<|im_start|>ab", add_special_tokens=False) == [1, VOCAB.index("ab")]


def sub_in(path: str, names) -> bool:
    return any(n in path for n in names)


GEMMA_VOCAB = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581", "a", "b", "\u2581a", "ab", "  "]


def test_synthetic_gemma3_gguf_matches_mlx_lm(tmp_path):
    """gemma3 -> gemma3_text: pre/post norms mapped, llama.cpp's 1 + w norms undone, the
    settings llama.cpp hard-codes (local RoPE base, 1-in-6 global layers, query scale)."""
    from mlx.utils import tree_flatten

    module = importlib.import_module("mlx_lm.models.gemma3_text")
    args = dict(
        model_type="gemma3_text",
        hidden_size=64,
        num_hidden_layers=6,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        rms_norm_eps=1e-6,
        vocab_size=len(GEMMA_VOCAB),
        rope_theta=1e6,
        rope_local_base_freq=10000.0,
        query_pre_attn_scalar=32,
        sliding_window=4,
        sliding_window_pattern=6,
        max_position_embeddings=2048,
    )
    ref = module.Model(module.ModelArgs.from_dict(args))
    ref.sanitize({})  # tied embeddings, as the GGUF has no output.weight
    ref.update(tree_unflatten_random(ref))
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "embed_tokens": "token_embd",
        "norm": "output_norm",
    }
    tensors = {}
    for path, value in tree_flatten(ref.parameters()):
        parts = path.split(".")
        if parts[1] == "layers":
            name = f"blk.{parts[2]}.{names['.'.join(parts[3:-1])]}.weight"
        else:
            name = f"{names[parts[1]]}.weight"
        tensors[name] = value + 1.0 if name.endswith("norm.weight") else value
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    meta = {
        "general.architecture": "gemma3",
        "gemma3.embedding_length": u32(64),
        "gemma3.block_count": u32(6),
        "gemma3.feed_forward_length": u32(96),
        "gemma3.attention.head_count": u32(4),
        "gemma3.attention.head_count_kv": u32(1),
        "gemma3.attention.key_length": u32(32),
        "gemma3.attention.sliding_window": u32(4),
        "gemma3.attention.layer_norm_rms_epsilon": mx.array(1e-6, dtype=mx.float32),
        "gemma3.rope.freq_base": mx.array(1e6, dtype=mx.float32),
        "gemma3.context_length": u32(2048),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": GEMMA_VOCAB,
        "tokenizer.ggml.scores": mx.array(
            [-1000.0] * 4 + [-1, -2, -3, -4, -5, -1000], dtype=mx.float32
        ),
        "tokenizer.ggml.token_type": mx.array([3, 3, 3, 3, 1, 1, 1, 1, 1, 4], dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(2),
        "tokenizer.ggml.eos_token_id": u32(1),
        "tokenizer.ggml.unknown_token_id": u32(3),
        "tokenizer.ggml.padding_token_id": u32(0),
        "tokenizer.ggml.add_bos_token": mx.array(True),
        "tokenizer.ggml.add_space_prefix": mx.array(False),
    }
    path = tmp_path / "tiny-gemma3.gguf"
    mx.save_gguf(str(path), tensors, meta)
    model, tok, info = load_gguf_model(path)
    assert info.architecture == "gemma3" and info.weights == "native"
    ids = mx.array([[2, 5, 7, 8, 6, 4, 5, 7, 8, 5, 6, 7]])  # longer than the sliding window
    assert mx.abs(model(ids) - ref(ids)).max().item() < 1e-4
    assert tok.encode("ab a  b") == [2, 8, 7, 9, 6]
    assert tok.decode([8, 7, 9, 6]) == "ab a  b"


def tree_unflatten_random(model):
    from mlx.utils import tree_flatten, tree_unflatten

    keys = mx.random.split(mx.random.key(0), len(tree_flatten(model.parameters())))
    flat = []
    for i, (name, value) in enumerate(tree_flatten(model.parameters())):
        flat.append((name, 0.2 * mx.random.normal(value.shape, key=keys[i])))
    return tree_unflatten(flat)
