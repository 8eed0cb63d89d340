"""gemma3 -> mlx-lm ``gemma3_text``.

llama.cpp stores every Gemma norm weight as 1 + w (its RMSNorm multiplies by the weight;
Gemma's by 1 + weight): the values are given back as w. Gemma's ``ffn_norm`` is the
pre-feed-forward norm, and ``post_attention_norm`` / ``post_ffw_norm`` exist too. Settings
llama.cpp hard-codes rather than stores: local (sliding-window) RoPE base 10000, one global
layer in 6, and the query scale 1/sqrt(head_dim) (the 62-layer 27B uses 1/sqrt(hidden/heads)).
"""

from .base import LAYER_MAP, Architecture

LAYER_MAP_GEMMA = {
    **LAYER_MAP,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def _extra_args(setting, args: dict) -> dict:
    hidden, heads = args["hidden_size"], args["num_attention_heads"]
    return {
        "rope_local_base_freq": 10000.0,
        "sliding_window": int(setting("attention.sliding_window", 512)),
        "sliding_window_pattern": 6,
        # an int, as transformers' Gemma3TextConfig validates it (niah convert's folders)
        "query_pre_attn_scalar": hidden // heads
        if args["num_hidden_layers"] == 62
        else args["head_dim"],
    }


def _tensor_value(name: str, value):
    return value - 1.0 if name.endswith("norm.weight") else value


ARCHITECTURE = Architecture(
    model_type="gemma3_text",
    layer_map=LAYER_MAP_GEMMA,
    extra_args=_extra_args,
    tensor_value=_tensor_value,
)
