"""Merging attention partials by their logsumexp (FlashAttention-2's split-KV combine).

For partials (out_c, lse_c) over disjoint key sets:
``m = max_c lse_c``, ``w_c = exp(lse_c - m)``, ``out = sum_c w_c out_c / sum_c w_c`` and
``lse = m + log(sum_c w_c)``. A partial with lse = -inf (all its keys masked) has weight 0;
rows where every partial is -inf give out = 0 and lse = -inf, never NaN.

`Accumulator` is the streaming form: one running (out, lse) pair in float32, so memory does not
grow with the number of chunks.
"""

from __future__ import annotations

import mlx.core as mx


def _finite_max(a: mx.array) -> mx.array:
    return mx.where(mx.isinf(a) & (a < 0), 0.0, a)


def merge_chunks(outs, lses) -> tuple[mx.array, mx.array]:
    """n-ary merge: lists of partials, or stacked arrays with a leading chunk axis."""
    if isinstance(outs, (list, tuple)):
        if not outs:
            raise ValueError("merge_chunks needs at least one partial")
        dtype = outs[0].dtype
        outs = mx.stack([o.astype(mx.float32) for o in outs])
        lses = mx.stack([x.astype(mx.float32) for x in lses])
    else:
        dtype = outs.dtype
        outs, lses = outs.astype(mx.float32), lses.astype(mx.float32)
    m = _finite_max(mx.max(lses, axis=0))
    w = mx.exp(lses - m)  # [C, B, H, qL]; exp(-inf) = 0
    total = mx.sum(w, axis=0)
    safe = mx.where(total > 0, total, 1.0)
    out = mx.sum(w[..., None] * outs, axis=0) / safe[..., None]
    lse = mx.where(total > 0, m + mx.log(safe), -mx.inf)
    return out.astype(dtype), lse


class Accumulator:
    """Streaming merge: add partials one at a time; memory stays one (out, lse) pair."""

    def __init__(self):
        self.out: mx.array | None = None
        self.lse: mx.array | None = None
        self.dtype = None

    def add(self, out: mx.array, lse: mx.array) -> None:
        out32, lse32 = out.astype(mx.float32), lse.astype(mx.float32)
        if self.out is None:
            self.out, self.lse, self.dtype = out32, lse32, out.dtype
            return
        m = _finite_max(mx.maximum(self.lse, lse32))
        wa, wb = mx.exp(self.lse - m), mx.exp(lse32 - m)
        total = wa + wb
        safe = mx.where(total > 0, total, 1.0)
        self.out = (wa[..., None] * self.out + wb[..., None] * out32) / safe[..., None]
        self.lse = mx.where(total > 0, m + mx.log(safe), -mx.inf)

    def result(self) -> tuple[mx.array, mx.array]:
        if self.out is None:
            raise ValueError("no partials were added")
        return self.out.astype(self.dtype), self.lse
