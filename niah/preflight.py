"""Memory preflight: will a trial fit before it runs?

Estimate = weights + KV cache (2 x layers x KV heads x head dim x tokens x bytes, or the
quantized size with --kv-bits) + attention temporaries of the route in force + logits, against
the device's working set (Metal's recommended working set, the CUDA card's memory, or system
memory on CPU). A trial that will not fit is recorded as SKIP with this reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .model import ModelInfo

SAFETY = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    attention: int
    other: int
    working_set: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.attention + self.other

    @property
    def fits(self) -> bool:
        return self.total <= SAFETY * self.working_set

    def reason(self) -> str:
        """One line whose listed parts (each rounded to 0.1 GiB) add up to the total shown."""
        gib = 1024 ** 3
        parts = {name: round(value / gib, 1) for name, value in (
            ("weights", self.weights), ("KV", self.kv_cache), ("attention", self.attention),
            ("other", self.other))}
        listed = ", ".join(f"{name} {value:.1f}" for name, value in parts.items())
        return (f"needs about {sum(parts.values()):.1f} GiB ({listed}) of a "
                f"{self.working_set / gib:.1f} GiB working set")


def working_set_bytes() -> int:
    import mlx.core as mx

    try:
        info = mx.device_info()
    except Exception:
        info = {}
    for key in ("max_recommended_working_set_size", "total_memory", "memory_size"):
        if info.get(key):
            return int(info[key])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * 1024 ** 3


def kv_bytes(info: ModelInfo, *, tokens: int, kv_bits: int | None = None,
             kv_group_size: int = 64, dtype_bytes: int = 2) -> int:
    per = 2 * info.n_layers * info.n_kv_heads * info.head_dim * tokens
    if kv_bits is None:
        return per * dtype_bytes
    # packed values plus a float16 scale and bias per group
    return int(per * kv_bits / 8 + per / kv_group_size * 4)


def estimate(info: ModelInfo, *, context: int, route: str, prefill_step: int,
             kv_bits: int | None = None, kv_group_size: int = 64, chunk_size: int = 32768,
             backend: str = "cpu", working_set: int | None = None) -> MemoryEstimate:
    """Peak memory of one trial at this context."""
    kv = kv_bytes(info, tokens=context + 64, kv_bits=kv_bits, kv_group_size=kv_group_size)
    q_rows = min(prefill_step, context)
    heads = max(info.n_heads, 1)
    fused = backend in ("metal", "cuda") and kv_bits is None
    if route == "kv-chunks":
        keys = min(chunk_size, context)
    elif fused:
        keys = 0  # fused kernels keep scores on chip
    else:
        keys = context
    attention = 3 * heads * q_rows * keys * 4
    other = 8 * prefill_step * max(info.n_heads * info.head_dim, 1) * 4 + 256 * 1024 ** 2
    return MemoryEstimate(weights=info.weight_bytes, kv_cache=kv, attention=attention,
                          other=other, working_set=working_set or working_set_bytes())
