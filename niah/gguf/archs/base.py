"""What an architecture module provides: the `Architecture` record and the tensor-name maps
most llama.cpp architectures share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# llama.cpp per-layer tensor part -> mlx-lm module path inside model.layers.N
LAYER_MAP = {
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
# llama.cpp top-level tensor -> mlx-lm module path
TOP_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def no_extra_args(setting: Callable, args: dict) -> dict:
    return {}


def unchanged(name: str, value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Architecture:
    """How one llama.cpp architecture becomes an mlx-lm model.

    model_type: the mlx-lm module (mlx_lm.models.<model_type>) and ModelArgs.model_type.
    layer_map: llama.cpp per-layer tensor part -> mlx-lm path (parts absent here are dropped).
    extra_args: (setting, args) -> ModelArgs entries beyond the common ones; setting(key,
        default) reads "<arch>.<key>" from the metadata, args holds the common entries.
    tensor_value: (GGUF tensor name, value) -> the value mlx-lm expects.
    """

    model_type: str
    layer_map: Mapping[str, str] = field(default_factory=lambda: dict(LAYER_MAP))
    top_map: Mapping[str, str] = field(default_factory=lambda: dict(TOP_MAP))
    extra_args: Callable[[Callable, dict], dict] = no_extra_args
    tensor_value: Callable[[str, Any], Any] = unchanged
