"""Dequantize GGML blocks with MLX ops, on MLX's default device, instead of in numpy.

The same arithmetic as the gguf package's numpy dequantizers (float16 scales widened to
float32, then float32 multiplies and subtracts in the same order), so the results are equal
bit for bit on the CPU backend (tests/test_weight_cache.py holds each type against gguf on
random blocks). Types without an MLX version here return None from `dequantize`: the caller
then uses gguf's numpy code. benchmarks/gguf_load.py times both side by side.
"""

from __future__ import annotations

QK_K = 256


def _u8(raw, block_bytes: int):
    import mlx.core as mx

    n = raw.size // block_bytes
    return mx.array(raw).reshape(n, block_bytes), n


def _f16(b):
    import mlx.core as mx

    return b.view(mx.float16).astype(mx.float32)


def _shifts(*values):
    import mlx.core as mx

    return mx.array(values, dtype=mx.uint8)


def _scale_min_k4(s, n):
    """The 8 six-bit scales and mins packed in a Q4_K/Q5_K block's 12 scale bytes."""
    import mlx.core as mx

    s = s.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = mx.concatenate([d & 63, (md & 15) | ((d >> 2) & 48)], axis=-1)
    mn = mx.concatenate([m & 63, (md >> 4) | ((m >> 2) & 48)], axis=-1)
    return sc.astype(mx.float32), mn.astype(mx.float32)


def _q4_k(raw):
    import mlx.core as mx

    b, n = _u8(raw, 144)
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16], n)
    qs = b[:, 16:].reshape(n, 4, 1, 32) >> _shifts(0, 4).reshape(1, 1, 2, 1)
    qs = (qs & 15).reshape(n, 8, 32).astype(mx.float32)
    return ((d * sc).reshape(n, 8, 1) * qs - (dmin * mn).reshape(n, 8, 1)).reshape(n, QK_K)


def _q5_k(raw):
    import mlx.core as mx

    b, n = _u8(raw, 176)
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16], n)
    qh = b[:, 16:48].reshape(n, 1, 1, 32) >> mx.arange(8, dtype=mx.uint8).reshape(1, 1, 8, 1)
    ql = b[:, 48:].reshape(n, 4, 1, 32) >> _shifts(0, 4).reshape(1, 1, 2, 1)
    q = ((ql & 15).reshape(n, 8, 32) | ((qh & 1).reshape(n, 8, 32) << 4)).astype(mx.float32)
    return ((d * sc).reshape(n, 8, 1) * q - (dmin * mn).reshape(n, 8, 1)).reshape(n, QK_K)


def _q6_k(raw):
    import mlx.core as mx

    b, n = _u8(raw, 210)
    scales = b[:, 192:208].view(mx.int8).astype(mx.float32)
    d = (_f16(b[:, 208:210]) * scales).reshape(n, 16, 1)
    ql = b[:, :128].reshape(n, 2, 1, 64) >> _shifts(0, 4).reshape(1, 1, 2, 1)
    qh = b[:, 128:192].reshape(n, 2, 1, 32) >> _shifts(0, 2, 4, 6).reshape(1, 1, 4, 1)
    q = ((ql & 15).reshape(n, 8, 32) | ((qh & 3).reshape(n, 8, 32) << 4)).view(mx.int8) - 32
    return (d * q.reshape(n, 16, 16).astype(mx.float32)).reshape(n, QK_K)


def _q5_0(raw):
    import mlx.core as mx

    b, n = _u8(raw, 22)
    d = _f16(b[:, 0:2])
    qh = (b[:, 2:6].reshape(n, 4, 1) >> mx.arange(8, dtype=mx.uint8).reshape(1, 1, 8)) & 1
    ql = (b[:, 6:].reshape(n, 1, 16) >> _shifts(0, 4).reshape(1, 2, 1)) & 15
    q = (ql.reshape(n, 32) | (qh.reshape(n, 32) << 4)).view(mx.int8) - 16
    return d * q.astype(mx.float32)


def _q8_0(raw):
    import mlx.core as mx

    b, _ = _u8(raw, 34)
    return b[:, 2:].view(mx.int8).astype(mx.float32) * _f16(b[:, 0:2])


def _f32(raw):
    import mlx.core as mx

    return mx.array(raw).reshape(-1).view(mx.float32)


def _f16_tensor(raw):
    import mlx.core as mx

    return mx.array(raw).reshape(-1).view(mx.float16).astype(mx.float32)


_BY_TYPE = {
    "F32": _f32,
    "F16": _f16_tensor,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
    "Q5_0": _q5_0,
    "Q8_0": _q8_0,
}
MLX_TYPES = frozenset(_BY_TYPE)


def dequantize(raw, type_name: str, shape: tuple[int, ...]):
    """float32 MLX array of `shape` from one tensor's GGML blocks (uint8 numpy rows, as
    TensorEntry.raw gives them), or None when `type_name` has no MLX dequantizer here."""
    fn = _BY_TYPE.get(type_name)
    if fn is None:
        return None
    return fn(raw).reshape(shape)
