"""llama (Llama, SmolLM2, ...) -> mlx-lm ``llama``.

llama.cpp permutes the Q and K projections of llama-architecture models for interleaved
(GPT-J style) RoPE, so the model runs with ``rope_traditional=True``.
"""

from .base import Architecture


def _extra_args(setting, args: dict) -> dict:
    return {"rope_traditional": True}


ARCHITECTURE = Architecture(model_type="llama", extra_args=_extra_args)
