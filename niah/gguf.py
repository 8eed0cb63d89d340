"""Load a GGUF file into an mlx-lm model, with its tokenizer and chat template.

Reading (any quant type, the weight mode, the file digest) is `niah.gguf_read`; the tokenizer
is `niah.gguf_tokenizer`. This module maps llama.cpp's architecture, settings and tensor names
onto mlx-lm's llama / qwen2 / qwen3 / gemma3_text modules and loads the weights, quantizing
exactly the layers that arrive quantized, with their group size and bits.

Architecture notes:
- llama.cpp permutes the Q and K projections of llama-architecture models for interleaved
  (GPT-J style) RoPE, so llama GGUFs need ``rope_traditional=True``; qwen2/qwen3 are not.
- gemma3 -> mlx-lm ``gemma3_text``. llama.cpp stores every Gemma norm weight as 1 + w (its
  RMSNorm multiplies by the weight; Gemma's by 1 + weight): the loader subtracts 1. Gemma's
  ``ffn_norm`` is the pre-feed-forward norm and ``post_attention_norm`` / ``post_ffw_norm``
  exist too. Settings llama.cpp hard-codes rather than stores: local (sliding-window) RoPE
  base 10000, one global layer in 6, and the query scale 1/sqrt(head_dim) (the 62-layer 27B
  uses 1/sqrt(hidden/heads)).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import NiahError
from .gguf_read import DEFAULT_QUANT, file_digest, read_gguf
from .gguf_tokenizer import build_tokenizer  # noqa: F401 - re-exported

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
MLX_MODEL_TYPE = {"gemma3": "gemma3_text"}

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
_GEMMA_LAYER_MAP = {
    **_LAYER_MAP,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class GGUFInfo:
    """What the loader learned from the file."""

    architecture: str
    trained_context: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    name: str
    digest: str = ""               # sha256 of the file
    weights: str = ""              # "native", "q8/g64", "q4/g64" or "f16"
    quant_types: str = ""          # the file's tensor types, e.g. "F32,Q4_K,Q5_0,Q6_K,Q8_0"
    rope_scaling: dict | None = None


def _scalar(meta: dict, key: str, default=None):
    v = meta.get(key, default)
    if hasattr(v, "item"):
        v = v.item()
    return v


def map_tensor_name(name: str, arch: str = "llama") -> str | None:
    """llama.cpp tensor name -> mlx-lm parameter path (None for tensors mlx-lm does not use)."""
    layer_map = _GEMMA_LAYER_MAP if arch == "gemma3" else _LAYER_MAP
    m = re.match(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m:
        layer, part, kind = m.groups()
        target = layer_map.get(part)
        return None if target is None else f"model.layers.{layer}.{target}.{kind}"
    m = re.match(r"^([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m and m.group(1) in _TOP_MAP:
        return f"{_TOP_MAP[m.group(1)]}.{m.group(2)}"
    return None


def rope_scaling_from_meta(meta: dict, arch: str) -> dict | None:
    """The model's own RoPE scaling (rope.scaling.*) as mlx-lm's rope_scaling dict."""
    kind = _scalar(meta, f"{arch}.rope.scaling.type")
    factor = _scalar(meta, f"{arch}.rope.scaling.factor")
    if kind in (None, "none") or not factor or float(factor) == 1.0:
        return None
    out = {"type": str(kind), "factor": float(factor)}
    orig = _scalar(meta, f"{arch}.rope.scaling.original_context_length")
    if orig:
        out["original_max_position_embeddings"] = int(orig)
    return out


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
        "model_type": MLX_MODEL_TYPE.get(arch, arch),
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
        "rope_scaling": rope_scaling_from_meta(meta, arch),
    }
    if arch == "llama":
        args["rope_traditional"] = True
    if arch == "gemma3":
        args.update({
            "rope_local_base_freq": 10000.0,
            "sliding_window": int(g("attention.sliding_window", 512)),
            "sliding_window_pattern": 6,
            "query_pre_attn_scalar": float(hidden // heads if args["num_hidden_layers"] == 62
                                           else head_dim),
        })
    return args


def _map_weights(raw, arch: str) -> dict:
    """GGUF tensors -> mlx-lm parameter paths, with Gemma's 1 + w norms undone."""
    mapped = {}
    for name, value in raw.tensors.items():
        target = map_tensor_name(name, arch)
        if target is None:
            continue
        if arch == "gemma3" and name.endswith("norm.weight"):
            value = value - 1.0
        mapped[target] = value
    return mapped


def load_gguf_model(path: str | Path, *, quant: str = DEFAULT_QUANT,
                    rope_scaling: dict | None | str = "model"):
    """Load (model, hf_tokenizer, info) from a GGUF file.

    quant: see niah.gguf_read.QUANT_MODES. rope_scaling: "model" keeps the file's own
    setting; None removes it; a dict (mlx-lm's rope_scaling) replaces it.
    """
    import importlib

    import mlx.core as mx
    import mlx.nn as nn

    path = Path(path)
    raw = read_gguf(path, quant=quant)
    arch = _scalar(raw.meta, "general.architecture")
    args = model_args(raw.meta)
    if rope_scaling != "model":
        args["rope_scaling"] = rope_scaling
    args["tie_word_embeddings"] = "output.weight" not in raw.tensors
    module = importlib.import_module(f"mlx_lm.models.{args['model_type']}")
    model = module.Model(module.ModelArgs.from_dict(args))
    mapped = _map_weights(raw, arch)
    if hasattr(model, "sanitize"):
        mapped = model.sanitize(mapped)
    qparams = {}
    for base, (group, bits) in raw.quantized.items():
        target = map_tensor_name(f"{base}.weight", arch)
        if target is not None:
            qparams[target[: -len(".weight")]] = {"group_size": group, "bits": bits}

    nn.quantize(model, class_predicate=lambda p, layer: hasattr(layer, "to_quantized")
                and qparams.get(p, False))
    try:
        model.load_weights(list(mapped.items()), strict=True)
    except ValueError as exc:
        raise NiahError(
            f"GGUF {path.name!r} does not map cleanly onto mlx-lm's {args['model_type']} model "
            f"({exc}): use an MLX model folder instead"
        ) from None
    mx.eval(model.parameters())
    model.eval()

    tokenizer = build_tokenizer(raw.meta)
    info = GGUFInfo(
        architecture=arch,
        trained_context=int(args["max_position_embeddings"]),
        n_layers=int(args["num_hidden_layers"]),
        n_heads=int(args["num_attention_heads"]),
        n_kv_heads=int(args["num_key_value_heads"]),
        head_dim=int(args["head_dim"]),
        name=str(_scalar(raw.meta, "general.name", path.stem)),
        digest=file_digest(path),
        weights=raw.weights,
        quant_types=",".join(sorted(raw.types)),
        rope_scaling=args["rope_scaling"],
    )
    return model, tokenizer, info
