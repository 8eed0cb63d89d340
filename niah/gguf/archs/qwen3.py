"""qwen3 -> mlx-lm ``qwen3``: the shared tensor names plus per-head Q/K norms
(attn_q_norm / attn_k_norm, in the shared map); head_dim from attention.key_length."""

from .base import Architecture

ARCHITECTURE = Architecture(model_type="qwen3")
