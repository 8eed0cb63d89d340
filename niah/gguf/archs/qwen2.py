"""qwen2 (Qwen2, Qwen2.5) -> mlx-lm ``qwen2``: the shared tensor names, Q/K not permuted."""

from .base import Architecture

ARCHITECTURE = Architecture(model_type="qwen2")
