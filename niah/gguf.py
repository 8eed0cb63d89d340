"""Load a GGUF file into an mlx-lm model, kept quantized, with its tokenizer.

`mx.load(path, return_metadata=True)` reads GGUF directly: Q4_0/Q4_1/Q8_0 tensors arrive as
MLX affine-quantized triples (weight, scales, biases; group size 32); other types arrive
dequantized. This module maps llama.cpp tensor names onto mlx-lm's llama / qwen2 / qwen3
modules, quantizes each layer with the bits its tensors carry, and builds the tokenizer and
chat template from the metadata (no torch, no hub).

llama.cpp permutes the Q and K projections of llama-architecture models for interleaved
(GPT-J style) RoPE, so llama GGUFs need ``rope_traditional=True``; qwen2/qwen3 are not permuted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import NiahError

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3")
GGUF_GROUP_SIZE = 32

_LAYER_MAP = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class GGUFInfo:
    """What the loader learned from the metadata."""

    architecture: str
    trained_context: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    name: str


def _scalar(meta: dict, key: str, default=None):
    v = meta.get(key, default)
    if hasattr(v, "item"):
        v = v.item()
    return v


def map_tensor_name(name: str) -> str | None:
    """llama.cpp tensor name -> mlx-lm parameter path (None for tensors mlx-lm does not use)."""
    m = re.match(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m:
        layer, part, kind = m.groups()
        target = _LAYER_MAP.get(part)
        return None if target is None else f"model.layers.{layer}.{target}.{kind}"
    m = re.match(r"^([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m and m.group(1) in _TOP_MAP:
        return f"{_TOP_MAP[m.group(1)]}.{m.group(2)}"
    return None


def model_args(meta: dict) -> dict:
    """Build mlx-lm ModelArgs keyword arguments from GGUF metadata."""
    arch = _scalar(meta, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise NiahError(
            f"GGUF architecture {arch!r} is not supported: use a {'/'.join(SUPPORTED_ARCHS)} "
            "GGUF, or an MLX model folder or hub id"
        )

    def g(key, default=None):
        return _scalar(meta, f"{arch}.{key}", default)

    hidden = int(g("embedding_length"))
    heads = int(g("attention.head_count"))
    head_dim = int(g("attention.key_length", hidden // heads))
    args = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": int(g("block_count")),
        "intermediate_size": int(g("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length", 4096)),
        "head_dim": head_dim,
    }
    if arch == "llama":
        args["rope_traditional"] = True
    return args


def _load_raw(path: Path):
    import mlx.core as mx

    if not path.is_file():
        raise NiahError(f"GGUF file {str(path)!r} not found: check the path")
    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises plain exceptions for unreadable files
        raise NiahError(f"cannot read GGUF {str(path)!r} ({exc}): check that it is a GGUF file")


def load_gguf_model(path: str | Path):
    """Load (model, hf_tokenizer, info) from a GGUF file, keeping quantized tensors quantized."""
    import importlib

    import mlx.core as mx
    import mlx.nn as nn

    path = Path(path)
    weights, meta = _load_raw(path)
    args = model_args(meta)
    args["tie_word_embeddings"] = "output.weight" not in weights
    arch = args["model_type"]
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    margs = module.ModelArgs.from_dict(args)

    mapped = {}
    for name, value in weights.items():
        target = map_tensor_name(name)
        if target is not None:
            mapped[target] = value
    model = module.Model(margs)

    # Quantize exactly the layers whose tensors arrived quantized, with their own bits.
    def predicate(path_: str, layer) -> bool | dict:
        scales = mapped.get(f"{path_}.scales")
        if scales is None or not hasattr(layer, "to_quantized"):
            return False
        packed = mapped[f"{path_}.weight"].shape[-1]
        in_dims = scales.shape[-1] * GGUF_GROUP_SIZE
        bits = packed * 32 // in_dims
        return {"group_size": GGUF_GROUP_SIZE, "bits": bits}

    nn.quantize(model, class_predicate=predicate)
    try:
        model.load_weights(list(mapped.items()), strict=True)
    except ValueError as exc:
        raise NiahError(
            f"GGUF {path.name!r} does not map cleanly onto mlx-lm's {arch} model ({exc}): "
            "use an MLX model folder instead"
        ) from None
    mx.eval(model.parameters())
    model.eval()

    tokenizer = build_tokenizer(meta)
    info = GGUFInfo(
        architecture=arch,
        trained_context=int(args["max_position_embeddings"]),
        n_layers=int(args["num_hidden_layers"]),
        n_heads=int(args["num_attention_heads"]),
        n_kv_heads=int(args["num_key_value_heads"]),
        head_dim=int(args["head_dim"]),
        name=str(_scalar(meta, "general.name", path.stem)),
    )
    return model, tokenizer, info


def _pre_tokenizer(pre: str | None):
    """The pre-tokenizer named by tokenizer.ggml.pre (digits isolated where the model did)."""
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("qwen2", "llama3", "llama-bpe", "deepseek-llm", "smaug-bpe"):
        # Numbers split into groups of at most three digits, as these models were trained.
        pattern = (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        )
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    return byte_level


def build_tokenizer(meta: dict):
    """A transformers fast tokenizer from GGUF metadata (byte-level BPE models only)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    kind = _scalar(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise NiahError(
            f"GGUF tokenizer type {kind!r} is not supported (byte-level BPE 'gpt2' only): "
            "use an MLX model folder for this model"
        )
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(_scalar(meta, "tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()

    types = meta.get("tokenizer.ggml.token_type")
    special = []
    if types is not None:
        types = types.tolist()
        special = [tokens[i] for i, t in enumerate(types) if t in (3, 4)]  # control, user-defined

    def tok_text(key):
        idx = _scalar(meta, key)
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    bos, eos = tok_text("tokenizer.ggml.bos_token_id"), tok_text("tokenizer.ggml.eos_token_id")
    pad = tok_text("tokenizer.ggml.padding_token_id")
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )
    if special:
        hf.add_special_tokens({"additional_special_tokens": special})
    add_bos = _scalar(meta, "tokenizer.ggml.add_bos_token", False)
    hf.add_bos_token = bool(add_bos)
    return hf
