"""Attention over mlx-lm's quantized KV cache (K/V as (weight, scales, biases) triples):
mlx-lm's own quantized attention, key-chunked past the threshold, or on CUDA attention over the
dequantized K/V through niah.sdpa.dispatch's routes.
"""

from __future__ import annotations

from collections import Counter

import mlx.core as mx

from .. import backend as _backend_mod
from .budget import ChunkConfig
from .chunks import _slice_mask_keys
from .dispatch import choose_route, dispatch, resolve_config
from .merge import Accumulator
from .reference import quantized_attention_with_lse


def dequantized_dispatch(
    q,
    qk,
    qv,
    *,
    scale: float,
    mask=None,
    group_size: int = 64,
    bits: int = 8,
    route: str = "auto",
    config: ChunkConfig | None = None,
    log: Counter | None = None,
) -> mx.array:
    """Attention over mlx-lm's quantized K/V triples computed on their dequantized values
    (what a quantized matmul multiplies by), through dispatch's routes; each route is logged
    as dequantized-<route>."""
    k = mx.dequantize(*qk, group_size=group_size, bits=bits).astype(q.dtype)
    v = mx.dequantize(*qv, group_size=group_size, bits=bits).astype(q.dtype)
    inner: Counter = Counter()
    out = dispatch(q, k, v, scale=scale, mask=mask, route=route, config=config, log=inner)
    if log is not None:
        for name, n in inner.items():
            log["dequantized-" + name] += n
    return out


def quantized_dispatch(
    q,
    qk,
    qv,
    *,
    scale: float,
    mask=None,
    group_size: int = 64,
    bits: int = 8,
    route: str = "auto",
    config: ChunkConfig | None = None,
    log: Counter | None = None,
    stock=None,
    backend_name: str | None = None,
) -> mx.array:
    """mlx-lm's quantized-KV attention, key-chunked past the threshold. On CUDA the cached
    K/V are dequantized and attention runs on the plain routes (dequantized_dispatch): MLX's
    CUDA quantized matmul has no kernel for the odd shapes of a prefill's last block."""
    config = config or resolve_config()
    if (backend_name or _backend_mod.backend()) == "cuda":
        return dequantized_dispatch(
            q,
            qk,
            qv,
            scale=scale,
            mask=mask,
            group_size=group_size,
            bits=bits,
            route=route,
            config=config,
            log=log,
        )
    kL = qk[0].shape[-2]
    name = choose_route(qL=q.shape[2], kL=kL, route=route, config=config)
    if name != "kv-chunks" and kL >= config.threshold and route != "stock":
        name = "kv-chunks"  # quantized K/V have no fused kernel to split queries over
    if log is not None:
        log["quantized-" + name] += 1
    if name == "stock" or name == "q-split":
        return stock(q, qk, qv, scale=scale, mask=mask, group_size=group_size, bits=bits)
    return _quantized_chunks(
        q, qk, qv, scale=scale, mask=mask, group_size=group_size, bits=bits, config=config
    )


def _quantized_chunks(q, qk, qv, *, scale, mask, group_size: int, bits: int, config):
    """mlx-lm's quantized K/V in key chunks (plain ops), merged by their logsumexp; each
    chunk evaluated on its own."""
    kL = qk[0].shape[-2]
    qL = q.shape[2]
    acc = Accumulator()
    for start in range(0, kL, config.chunk_size):
        stop = min(start + config.chunk_size, kL)
        kc = tuple(t[..., start:stop, :] for t in qk)
        vc = tuple(t[..., start:stop, :] for t in qv)
        if isinstance(mask, str):  # causal
            chunk_mask, shift = None, kL - qL - start
        else:
            chunk_mask, shift = _slice_mask_keys(mask, start, stop, kL), None
        out, lse = quantized_attention_with_lse(
            q,
            kc,
            vc,
            scale=scale,
            mask=chunk_mask,
            causal_shift=shift,
            group_size=group_size,
            bits=bits,
        )
        acc.add(out, lse)
        mx.eval(acc.out, acc.lse)
    return acc.result()[0]
