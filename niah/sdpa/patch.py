"""Swap mx.fast.scaled_dot_product_attention (and mlx-lm's quantized-KV attention) for niah's
routed SDPA for the duration of a `with` block.

mlx-lm looks the function up on `mx.fast` at call time, so models imported before the patch
use it too. The yielded `PatchState` counts the routes taken, so each trial can record what
actually ran.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

import mlx.core as mx

from .dispatch import ChunkConfig, dispatch, resolve_config
from .quantized import quantized_dispatch


@dataclass
class PatchState:
    route: str
    config: ChunkConfig
    routes: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """The routes taken, e.g. 'stock' or 'kv-chunks+stock' (most calls first)."""
        if not self.routes:
            return "none"
        return "+".join(name for name, _ in self.routes.most_common())


@contextlib.contextmanager
def patched(
    route: str = "auto",
    *,
    threshold: int | None = None,
    chunk_size: int | None = None,
    q_block: int | None = None,
):
    """Context manager: route every SDPA call through niah.sdpa.dispatch (key chunks through
    niah's self-tested fused kernel where one exists)."""
    if route not in ("auto", "stock", "chunked", "kv-chunks", "q-split"):
        raise ValueError(f"unknown route {route!r}: use auto, stock, chunked, kv-chunks or q-split")
    config = resolve_config(threshold=threshold, chunk_size=chunk_size, q_block=q_block)
    state = PatchState(route=route, config=config)
    original = mx.fast.scaled_dot_product_attention

    def routed(q, k, v, *, scale, mask=None, sinks=None, **kwargs):
        return dispatch(
            q,
            k,
            v,
            scale=scale,
            mask=mask,
            sinks=sinks,
            route=route,
            config=config,
            log=state.routes,
            stock=original,
            **kwargs,
        )

    base = None
    try:
        from mlx_lm.models import base as base  # noqa: PLW0127
    except ImportError:
        pass
    original_q = getattr(base, "quantized_scaled_dot_product_attention", None) if base else None

    def routed_quantized(queries, q_keys, q_values, scale, mask, group_size=64, bits=8):
        return quantized_dispatch(
            queries,
            q_keys,
            q_values,
            scale=scale,
            mask=mask,
            group_size=group_size,
            bits=bits,
            route=route,
            config=config,
            log=state.routes,
            stock=_keyword_stock(original_q),
        )

    mx.fast.scaled_dot_product_attention = routed
    if original_q is not None:
        base.quantized_scaled_dot_product_attention = routed_quantized
    try:
        yield state
    finally:
        mx.fast.scaled_dot_product_attention = original
        if original_q is not None:
            base.quantized_scaled_dot_product_attention = original_q


def _keyword_stock(fn):
    def call(q, qk, qv, *, scale, mask, group_size, bits):
        return fn(q, qk, qv, scale=scale, mask=mask, group_size=group_size, bits=bits)

    return call
