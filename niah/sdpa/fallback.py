"""Where a failed kernel's call runs: query blocks through stock mx.fast where stock's own
fused kernel serves them (stock_serves), sized by the FLOP budget on Metal (fallback_q_block);
niah.sdpa.dispatch falls back to the reference elsewhere."""

from __future__ import annotations

import mlx.core as mx

from .budget import ChunkConfig, attention_flops

# Head dims whose calls mx.fast serves with a fused kernel of its own (MLX 0.32's dispatch rules),
# float16/bfloat16 only: Metal's full attention (more than 8 query rows) and its vector kernel
# (at most 8 rows, rows x GQA group <= 32); CUDA's cuDNN (D a multiple of 8, at most 128).
# Elsewhere stock runs unfused ops, no faster than the reference.
STOCK_FUSED_HEAD_DIMS = {"metal": (64, 80, 128), "metal-vector": (64, 96, 128, 256)}
STOCK_FUSED_MAX_D_CUDA = 128


def fallback_q_block(q, k, *, config: ChunkConfig, backend_name: str) -> int:
    """Query rows per stock call when a failed kernel's call runs on stock: on Metal as many as
    the FLOP budget per command buffer allows over all keys (at least one), else config.q_block."""
    B, Hq, qL, D = q.shape
    if backend_name != "metal":
        return min(qL, config.q_block)
    per_row = attention_flops(B=B, Hq=Hq, qL=1, kL=k.shape[2], D=D)
    return max(1, min(qL, int(config.flop_budget // per_row)))


def stock_serves(q, k, v, *, mask, q_block: int, backend_name: str) -> bool:
    """True when mx.fast runs query blocks of `q_block` rows of this call with a fused kernel of
    its own (STOCK_FUSED_HEAD_DIMS), so a failed kernel's call can run there, exactly."""
    D, qL, kL = q.shape[-1], q.shape[2], k.shape[2]
    if q.dtype not in (mx.float16, mx.bfloat16) or not (q.dtype == k.dtype == v.dtype):
        return False
    if D != v.shape[-1] or (isinstance(mask, str) and qL > kL):  # q_split needs keys per row
        return False
    if backend_name == "cuda":
        return D % 8 == 0 and D <= STOCK_FUSED_MAX_D_CUDA
    if backend_name == "metal":
        rows = min(q_block, qL)
        if rows <= 8:
            return (
                D in STOCK_FUSED_HEAD_DIMS["metal-vector"]
                and rows * (q.shape[1] // k.shape[1]) <= 32
            )
        return D in STOCK_FUSED_HEAD_DIMS["metal"]
    return False
