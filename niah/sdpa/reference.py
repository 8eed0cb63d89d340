"""Plain-ops attention that also returns the logsumexp: the ground truth on every backend.

Everything is computed in float32 (float64 is not available on every MLX backend; tests use
NumPy float64 for the deepest reference). GQA is done by reshaping the queries into
``[B, Hkv, G, qL, D]`` so K/V are never tiled. Masks follow mx.fast semantics: None,
"causal" (lower-right aligned), a bool array (True = attend) or an additive array,
broadcastable to ``[B, Hq, qL, kL]``. ``causal_shift`` lets a key chunk keep absolute
positions: query row i sees chunk key j when ``j <= i + causal_shift``.

A fully masked row returns zeros and lse = -inf (never NaN).

Memory: the float32 scores of one call are B * Hq * qL * kL * 4 bytes (8.6 GB at qL 2048, 32
heads, 32K keys). Above `SCORES_BUDGET_BYTES` the queries run in blocks, each evaluated before
the next, so one score intermediate stays under the budget.
"""

from __future__ import annotations

import mlx.core as mx

SCORES_BUDGET_BYTES = 256 * 1024**2


def _grouped_mask(mask: mx.array, *, B: int, Hkv: int, G: int, qL: int, kL: int) -> mx.array:
    """Reshape a mask broadcastable to [B, Hq, qL, kL] into [B|1, Hkv|1, G|1, qL|1, kL]."""
    while mask.ndim < 4:
        mask = mx.expand_dims(mask, 0)
    mB, mH, mq, mk = mask.shape
    if mH == 1:
        return mx.expand_dims(mask, 2)  # [mB, 1, 1, mq, mk]
    return mask.reshape(mB, Hkv, G, mq, mk)


def causal_keep(*, qL: int, kL: int, shift: int) -> mx.array:
    """[qL, kL] bool: row i keeps key j when j <= i + shift."""
    rows = mx.arange(qL)[:, None]
    cols = mx.arange(kL)[None, :]
    return cols <= rows + shift


def _apply_mask(
    scores: mx.array, mask, *, causal_shift: int | None, B: int, Hkv: int, G: int
) -> mx.array:
    """Scores [B, Hkv, G, qL, kL] with the mask applied (-inf where a key is not kept)."""
    qL, kL = scores.shape[-2], scores.shape[-1]
    keep = None
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown mask {mask!r}: use 'causal', an array or None")
        keep = causal_keep(qL=qL, kL=kL, shift=kL - qL if causal_shift is None else causal_shift)
    elif mask is not None:
        gm = _grouped_mask(mask, B=B, Hkv=Hkv, G=G, qL=qL, kL=kL)
        if gm.dtype == mx.bool_:
            keep = gm
        else:
            scores = scores + gm.astype(mx.float32)
    elif causal_shift is not None:
        keep = causal_keep(qL=qL, kL=kL, shift=causal_shift)
    return scores if keep is None else mx.where(keep, scores, -mx.inf)


def attention_with_lse(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    *,
    scale: float,
    mask=None,
    sinks: mx.array | None = None,
    causal_shift: int | None = None,
    stream=None,
    scores_budget: int | None = None,
) -> tuple[mx.array, mx.array]:
    """Attention over all of k/v; returns (out in q.dtype, lse float32 [B, Hq, qL]).

    Query blocks (each evaluated) keep one float32 score tensor under `scores_budget` bytes
    (default SCORES_BUDGET_BYTES)."""
    B, Hq, qL, _ = q.shape
    kL = k.shape[2]
    rows = max(1, (scores_budget or SCORES_BUDGET_BYTES) // (4 * B * Hq * kL))
    if rows >= qL:
        return _attention(q, k, v, scale=scale, mask=mask, sinks=sinks, causal_shift=causal_shift)
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown mask {mask!r}: use 'causal', an array or None")
        mask, causal_shift = None, (kL - qL if causal_shift is None else causal_shift)
    outs, lses = [], []
    for a in range(0, qL, rows):
        b = min(a + rows, qL)
        m = mask
        if m is not None and m.ndim >= 2 and m.shape[-2] != 1:
            m = m[..., a:b, :]
        out, lse = _attention(
            q[:, :, a:b],
            k,
            v,
            scale=scale,
            mask=m,
            sinks=sinks,
            causal_shift=None if causal_shift is None else causal_shift + a,
        )
        mx.eval(out, lse)
        outs.append(out)
        lses.append(lse)
    return mx.concatenate(outs, axis=2), mx.concatenate(lses, axis=2)


def _attention(
    q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask, sinks, causal_shift
) -> tuple[mx.array, mx.array]:
    """One block of attention_with_lse (all of it in one graph)."""
    B, Hq, qL, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    qf = (q.astype(mx.float32) * scale).reshape(B, Hkv, G, qL, D)
    kf = mx.expand_dims(k.astype(mx.float32), 2)
    vf = mx.expand_dims(v.astype(mx.float32), 2)
    scores = qf @ kf.swapaxes(-1, -2)  # [B, Hkv, G, qL, kL]

    scores = _apply_mask(scores, mask, causal_shift=causal_shift, B=B, Hkv=Hkv, G=G)
    m = mx.max(scores, axis=-1, keepdims=True)
    if sinks is not None:
        s = sinks.astype(mx.float32).reshape(1, Hkv, G, 1, 1)
        m = mx.maximum(m, s)
    m_safe = mx.where(mx.isinf(m) & (m < 0), 0.0, m)
    p = mx.exp(scores - m_safe)
    denom = mx.sum(p, axis=-1, keepdims=True)
    if sinks is not None:
        denom = denom + mx.exp(s - m_safe)
    out = (p @ vf) / mx.where(denom > 0, denom, 1.0)
    lse = mx.where(denom > 0, m_safe + mx.log(mx.where(denom > 0, denom, 1.0)), -mx.inf)
    out = out.reshape(B, Hq, qL, v.shape[-1]).astype(q.dtype)  # value head dim may differ
    return out, lse.reshape(B, Hq, qL)


def quantized_attention_with_lse(
    q: mx.array,
    qk: tuple,
    qv: tuple,
    *,
    scale: float,
    mask=None,
    causal_shift: int | None = None,
    group_size: int = 64,
    bits: int = 8,
) -> tuple[mx.array, mx.array]:
    """attention_with_lse over mlx-lm's quantized K/V triples (weight, scales, biases)."""
    B, Hq, qL, D = q.shape
    Hkv = qk[0].shape[1]
    G = Hq // Hkv
    qs = (q * scale).reshape(B, Hkv, G, qL, D)
    qk = tuple(mx.expand_dims(t, 2) for t in qk)
    qv = tuple(mx.expand_dims(t, 2) for t in qv)
    scores = mx.quantized_matmul(qs, *qk, transpose=True, group_size=group_size, bits=bits).astype(
        mx.float32
    )
    scores = _apply_mask(scores, mask, causal_shift=causal_shift, B=B, Hkv=Hkv, G=G)
    m = mx.max(scores, axis=-1, keepdims=True)
    m_safe = mx.where(mx.isinf(m) & (m < 0), 0.0, m)
    p = mx.exp(scores - m_safe)
    denom = mx.sum(p, axis=-1, keepdims=True)
    out = mx.quantized_matmul(
        p.astype(q.dtype), *qv, transpose=False, group_size=group_size, bits=bits
    ).astype(mx.float32)
    out = out / mx.where(denom > 0, denom, 1.0)
    lse = mx.where(denom > 0, m_safe + mx.log(mx.where(denom > 0, denom, 1.0)), -mx.inf)
    return out.reshape(B, Hq, qL, D).astype(q.dtype), lse.reshape(B, Hq, qL)
