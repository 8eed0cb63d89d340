"""niah.sdpa: chunked full-attention SDPA with a logsumexp merge.

Public API (see ../shared/DESIGN.md):
    scaled_dot_product_attention(q, k, v, *, scale, mask=None, sinks=None,
                                 chunk_size=None, threshold=None, stream=None)
    attention_with_lse(q, k, v, *, scale, mask=None, sinks=None) -> (out, lse)
    merge_chunks(outs, lses) -> (out, lse)
    patched(route="auto", **options)

Layers: niah.kernels (the fused kernels) sits below this package; niah.sdpa.fused self-tests
them against the reference here, and dispatch uses them by default (docs/sdpa.md).
"""

from __future__ import annotations

from .dispatch import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_THRESHOLD,
    ROUTES,
    choose_route,
    force_route,
    resolve_config,
    scaled_dot_product_attention,
)
from .merge import Accumulator, merge_chunks
from .patch import PatchState, patched
from .reference import attention_with_lse as _attention_with_lse


def attention_with_lse(q, k, v, *, scale: float, mask=None, sinks=None):
    """Attention over all keys with its natural-log logsumexp (float32, [B, Hq, qL])."""
    return _attention_with_lse(q, k, v, scale=scale, mask=mask, sinks=sinks)


__all__ = [
    "scaled_dot_product_attention",
    "attention_with_lse",
    "merge_chunks",
    "patched",
    "Accumulator",
    "PatchState",
    "force_route",
    "resolve_config",
    "choose_route",
    "ROUTES",
    "DEFAULT_THRESHOLD",
    "DEFAULT_CHUNK_SIZE",
]
