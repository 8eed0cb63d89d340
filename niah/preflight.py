"""Preflight of one trial before it runs: the memory it needs, and the time it will take.

Memory (`estimate`): weights as loaded + the KV cache as mlx-lm allocates it (whole 256-slot
steps; the quantized size with --kv-bits) and the old buffer it copies from while growing +
attention temporaries of the route in force + activations of one prefill block + logits,
calibrated against measured peaks (benchmarks/calibration.py), against the device's working
set (Metal's recommended working set, the CUDA card's memory, or system memory on CPU). A trial
that will not fit is recorded as SKIP with `MemoryEstimate.reason()`, whose parts add up to
its total.

Time: `probe_throughput(session)` times a few short forward passes of the real model on this
device (a block of prompt tokens on an empty cache, the same block after a cache of filler
keys, one decode step), which gives seconds per prompt token, per (query, key) pair of
attention and per generated token; `estimate_seconds(context=..., throughput=...)` scales them
to a trial: prefill grows with the context squared through attention, so a long trial is
announced before it starts.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from .config import DEFAULT_KV_GROUP_SIZE, DEFAULT_MAX_TOKENS
from .errors import NiahError
from .model import ModelInfo
from .sdpa import DEFAULT_CHUNK_SIZE

SAFETY = 0.9
OTHER_FIXED = 32 * 1024**2  # small buffers (token ids, norms, sampler): a fixed allowance
KV_STEP = 256  # mlx-lm's KVCache grows its buffers in steps of this many slots
PROBE_BLOCK = 128  # prompt tokens per probe pass
PROBE_KEYS = 1024  # filler keys in the cache for the attention probe
UNFUSED_SCORE_BYTES = 6  # unfused attention, per (head, query, key): float32 scores and
# half as much again for the softmax's temporaries (calibrated)
QUANTIZED_SCORE_BYTES = 9  # a key chunk of mlx-lm's quantized attention (niah.sdpa.quantized,
# Metal and CPU with --kv-bits), per (head, query, key): float32 scores, their masked copy and
# the exponentials, with no query blocks (8.2-8.4 measured per call on the CPU)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int  # the cache as allocated plus the old buffer alive while it grows
    attention: int
    other: int  # activations of one prefill block, logits, plus OTHER_FIXED
    working_set: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.attention + self.other

    @property
    def fits(self) -> bool:
        return self.total <= SAFETY * self.working_set

    def reason(self) -> str:
        """One line naming every part; the printed parts add up to the printed total."""
        parts = (self.weights, self.kv_cache, self.attention, self.other)
        (w, kv, att, other), total = _rounded_parts(parts, scale=1024**3, decimals=1)
        return (
            f"needs about {total:.1f} GiB (weights {w:.1f} + KV {kv:.1f} + attention "
            f"{att:.1f} + activations {other:.1f}) of a "
            f"{self.working_set / 1024**3:.1f} GiB working set"
        )


def _rounded_parts(parts, *, scale: float, decimals: int) -> tuple[list[float], float]:
    """Each part and the total in units of `scale`, rounded to `decimals` so that the rounded
    parts sum exactly to the rounded total (largest remainders get the spare units)."""
    unit = 10**decimals
    exact = [p / scale * unit for p in parts]
    total = round(sum(exact))
    floors = [math.floor(x) for x in exact]
    spare = total - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in order[: max(0, spare)]:
        floors[i] += 1
    return [f / unit for f in floors], total / unit


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
        return 16 * 1024**3


def kv_bytes(
    info,
    *,
    tokens: int,
    kv_bits: int | None = None,
    kv_group_size: int = DEFAULT_KV_GROUP_SIZE,
    dtype_bytes: int = 2,
) -> int:
    """Bytes of the KV cache for `tokens`; quantized: packed values plus a float16 scale and
    bias per group of `kv_group_size` values."""
    per = 2 * info.n_layers * info.n_kv_heads * info.head_dim * tokens
    if kv_bits is None:
        return per * dtype_bytes
    if kv_bits <= 0:
        raise NiahError(f"--kv-bits {kv_bits} is not a bit width: use 2, 3, 4, 5, 6 or 8")
    if kv_group_size <= 0:
        raise NiahError(f"--kv-group-size {kv_group_size} must be positive: use 32, 64 or 128")
    return int(per * kv_bits / 8 + per / kv_group_size * 4)


@dataclass(frozen=True)
class Dims:
    """The model dimensions the estimate needs beyond ModelInfo's heads and layers."""

    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int  # bytes of one activation (and KV cache) element


def model_dims(info, *, backend: str = "cpu") -> Dims:
    """Dims from a ModelInfo (or ModelMeta); a field the model did not give falls back to
    the attention width (hidden), 4 x hidden (intermediate), nothing (vocab), and the
    dtype niah computes in on `backend` (float32 on the CPU, float16 on a GPU)."""
    hidden = getattr(info, "hidden_size", 0) or max(info.n_heads * info.head_dim, 1)
    return Dims(
        hidden=hidden,
        intermediate=getattr(info, "intermediate_size", 0) or 4 * hidden,
        vocab=getattr(info, "vocab_size", 0) or 0,
        dtype_bytes=getattr(info, "dtype_bytes", 0) or (4 if backend == "cpu" else 2),
    )


def cache_slots(*, context: int, rows: int, extra: int = DEFAULT_MAX_TOKENS) -> tuple[int, int]:
    """(slots allocated, slots of the last growth) of mlx-lm's KVCache after a prefill in
    blocks of `rows` and `extra` more tokens: each block grows the buffer by whole KV_STEPs."""

    def grow(n: int) -> int:
        return -(-n // KV_STEP) * KV_STEP

    prefill = max(context - 1, 1)
    full, tail = divmod(prefill, rows)
    slots = full * grow(rows) + (grow(tail) if tail else 0)
    last = grow(tail) if tail else grow(rows)
    need = prefill + 1 + extra
    if need > slots:
        last = grow(need - slots)
        slots += last
    return slots, last


def estimate(
    info: ModelInfo,
    *,
    context: int,
    route: str,
    prefill_step: int,
    kv_bits: int | None = None,
    kv_group_size: int = DEFAULT_KV_GROUP_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str = "cpu",
    working_set: int | None = None,
) -> MemoryEstimate:
    """Peak memory of one trial at this context: weights as loaded; the KV cache as mlx-lm
    allocates it plus the old buffer it concatenates from while growing; the activations of
    one prefill block (mlx-lm prefills all but the last prompt token in blocks of
    `prefill_step`, the block capped there); the attention temporaries of `route`; logits.

    On a GPU (metal, cuda) a buffer returns to the allocator only when the command buffer
    that used it completes, and a prefill block's graph is submitted whole: every layer's
    activations and old KV buffers are alive at once. On the CPU each is freed as soon as
    its last use ran: one layer's worth is alive."""
    dims = model_dims(info, backend=backend)
    rows = max(1, min(prefill_step, context - 1))
    slots, last = cache_slots(context=context, rows=rows)
    layers_alive = info.n_layers if backend in ("metal", "cuda") else 1
    kv_of = dict(kv_bits=kv_bits, kv_group_size=kv_group_size, dtype_bytes=dims.dtype_bytes)
    growth = kv_bytes(info, tokens=slots - last, **kv_of) * layers_alive // max(info.n_layers, 1)
    kv = kv_bytes(info, tokens=slots, **kv_of) + growth
    dequantized = backend == "cuda" and kv_bits is not None  # niah.sdpa.quantized
    attention = attention_bytes(
        info,
        dims,
        rows=rows,
        keys=context,
        route=route,
        chunk_size=chunk_size,
        fused=backend in ("metal", "cuda") and (kv_bits is None or dequantized),
        quantized=kv_bits is not None and not dequantized,
    )
    if dequantized:
        attention += dequantized_kv_bytes(
            info, keys=context, layers=layers_alive, dtype_bytes=dims.dtype_bytes
        )
    other = (
        activation_bytes(dims, rows=rows, layers=layers_alive) + logits_bytes(dims) + OTHER_FIXED
    )
    return MemoryEstimate(
        weights=info.weight_bytes,
        kv_cache=kv,
        attention=attention,
        other=other,
        working_set=working_set or working_set_bytes(),
    )


def dequantized_kv_bytes(info, *, keys: int, layers: int, dtype_bytes: int) -> int:
    """On CUDA a quantized cache's K and V are dequantized for each attention call: one
    layer's worth per layer alive at once."""
    return 2 * keys * max(info.n_kv_heads, 1) * info.head_dim * dtype_bytes * layers


def activation_bytes(dims: Dims, *, rows: int, layers: int) -> int:
    """One prefill block's activations in `layers` layers alive at once: per row and layer
    the MLP's gate and up outputs and two hidden-width buffers (residual, normed input)."""
    per_row_layer = 2 * dims.intermediate + 2 * dims.hidden
    return rows * layers * per_row_layer * dims.dtype_bytes


def attention_bytes(
    info,
    dims: Dims,
    *,
    rows: int,
    keys: int,
    route: str,
    chunk_size: int,
    fused: bool,
    quantized: bool = False,
) -> int:
    """Attention temporaries of one layer's block: the chunked route holds a chunk of scores
    per query head (over a quantized cache, mlx-lm's attention on the chunk: more of them);
    a fused kernel keeps stock scores on chip; unfused stock attention holds one layer's whole
    score matrix and its softmax temporaries."""
    heads = max(info.n_heads, 1)
    if "kv-chunks" in route:
        per = QUANTIZED_SCORE_BYTES if quantized else UNFUSED_SCORE_BYTES
        return heads * rows * min(chunk_size, keys) * (dims.dtype_bytes if fused else per)
    if fused:
        return 0
    return UNFUSED_SCORE_BYTES * heads * rows * keys


def logits_bytes(dims: Dims) -> int:
    """The last prompt token's and each decode step's logits (float32, a few alive)."""
    return 4 * dims.vocab * 4


@dataclass(frozen=True)
class Throughput:
    """Seconds per unit of work on this device, from probe_throughput (or given, in tests)."""

    token_s: float  # one prompt token through the model, attention aside
    pair_s: float  # one (query, key) pair of attention, over all layers and heads
    decode_s: float  # one generated token, attention aside
    basis: str  # what was measured, for messages


@dataclass(frozen=True)
class TimeEstimate:
    prefill_s: float
    decode_s: float
    basis: str

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    def describe(self) -> str:
        """e.g. 'about 2 h 05 min (prefill 2 h 04 min, decode 41 s; from a probe ...)'."""
        return (
            f"about {format_duration(self.total_s)} (prefill "
            f"{format_duration(self.prefill_s)}, decode {format_duration(self.decode_s)}; "
            f"{self.basis})"
        )


def format_duration(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{s / 86400:.1f} days"


def estimate_seconds(
    *, context: int, throughput: Throughput, max_tokens: int = DEFAULT_MAX_TOKENS, reused: int = 0
) -> TimeEstimate:
    """Time of one trial: prefill of the context's tokens not `reused` from a cache (causal:
    token i attends to i + 1 keys), then up to `max_tokens` decode steps over the context."""
    if context <= 0 or not 0 <= reused < context:
        raise ValueError(f"need 0 <= reused < context, got reused {reused}, context {context}")
    new = context - reused
    pairs = (context * (context + 1) - reused * (reused + 1)) / 2
    prefill = throughput.token_s * new + throughput.pair_s * pairs
    decode = max_tokens * (throughput.decode_s + throughput.pair_s * (context + max_tokens / 2))
    return TimeEstimate(prefill_s=prefill, decode_s=decode, basis=throughput.basis)


def probe_throughput(
    session, *, block: int = PROBE_BLOCK, keys: int = PROBE_KEYS, repeats: int = 2
) -> Throughput:
    """Time the real model here: `block` prompt tokens on an empty cache, the same block after
    `keys` filler keys, and one decode step after them (each the fastest of `repeats`, the
    first pass of each shape included in the repeats so compilation is not counted twice).
    Runs whatever SDPA is in force (call it inside niah.sdpa.patched to time a route)."""
    import mlx.core as mx

    ids = mx.arange(block, dtype=mx.int32)[None] % 128 + 16

    def fastest(prefix: int, n: int) -> float:
        best = math.inf
        for _ in range(repeats):
            cache = session.make_cache()
            if prefix:
                _fill_cache(cache, session, tokens=prefix)
            t0 = time.perf_counter()
            mx.eval(session.model(ids[:, :n], cache=cache))
            best = min(best, time.perf_counter() - t0)
        return best

    t_empty = fastest(0, block)
    t_keys = fastest(keys, block)
    t_decode = fastest(keys, 1)
    own_pairs = block * (block + 1) / 2
    pair_s = max(0.0, (t_keys - t_empty) / (block * keys))
    token_s = max(1e-9, (t_empty - pair_s * own_pairs) / block)
    decode_s = max(1e-9, t_decode - pair_s * (keys + 1))
    return Throughput(
        token_s=token_s,
        pair_s=pair_s,
        decode_s=decode_s,
        basis=f"from a {block}-token probe at 0 and {keys} keys on this device",
    )


def _fill_cache(cache, session, *, tokens: int) -> None:
    """Put `tokens` filler keys/values (zeros) in every layer's cache, as a prefill would."""
    import mlx.core as mx

    info = session.info
    dtype = getattr(mx, getattr(session, "compute_dtype", "float16"))
    shape = (1, info.n_kv_heads, tokens, info.head_dim)
    for c in cache:
        c.update_and_fetch(mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype))
    mx.eval([c.state for c in cache])
