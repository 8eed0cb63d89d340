"""Host side of niah's fused attention-with-logsumexp kernels (CUDA and Metal).

`flash_attention_with_lse(q, k, v, scale=..., mask=..., sinks=..., causal_shift=...)` has the
signature and semantics of niah.sdpa.reference.attention_with_lse (out in q.dtype, natural-log
lse in float32, fully masked rows give zeros and -inf) and runs one forward launch over the key
range, split along the keys into `splits` parts when there are too few row tiles to fill the
GPU, followed by a small combine launch (FlashAttention-2's split-KV scheme).

Tiles (`Tile`): MW warps (simdgroups) per block along the rows, each owning MT tiles of M query
rows (16 on CUDA, 8 on Metal), and BC keys per step. `choose_tile` picks by the number of packed rows (G * qL);
`TILE_OVERRIDE` (tests, benchmarks) forces one.

Sources live next to this file: flash_common.cuh + flash_fwd.cu + flash_combine.cu for CUDA,
flash_common.metal + flash_fwd.metal + flash_combine.metal for Metal; the two are kept in step.
`SOURCE_PATCH` (tests only) rewrites a kernel source before it is built, to prove that a broken
kernel is caught by the self-test.

Metal builds take `vector_loads`: the forward kernel is compiled with NIAH_VECTOR_LOADS 1
(16-byte vector loads of Q/K/V where the layout allows) or 0 (element-wise loads only, none of
the vector code compiled); the two builds get distinct kernel names (`_vec`, `_scalar`), so
MLX never serves one's library for the other. niah.kernels tries 1 first and falls back to 0
per variant. CUDA has one build.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .. import backend as backend_mod

HERE = Path(__file__).resolve().parent
SUPPORTED_DTYPES = ("float16", "bfloat16")
SUPPORTED_HEAD_DIMS = (64, 80, 96, 128, 256)

# Test switches (explicit overrides; None in normal use).
TILE_OVERRIDE: Tile | None = None
SPLITS_OVERRIDE: int | None = None
SOURCE_PATCH = None  # callable(name: str, source: str) -> str


@dataclass(frozen=True)
class Tile:
    mw: int  # warps (simdgroups) along rows
    mt: int  # row tiles per warp
    bc: int  # keys per step
    m: int = 16  # rows per row tile: 16 on CUDA (mma.sync m16), 8 on Metal (8x8 simdgroup
    #             matrices; 8 rows per simdgroup keep the accumulators in registers at D 256)

    @property
    def rows(self) -> int:
        return self.mw * self.mt * self.m

    @property
    def threads(self) -> int:
        return 32 * self.mw

    def smem_bytes(self, D: int) -> int:
        lds = D + 8
        return 2 * (self.rows * lds + 4 * self.bc * lds)

    def __str__(self) -> str:
        return f"{self.mw}x{self.mt}x{self.bc}" + ("" if self.m == 16 else f"r{self.m}")


@dataclass(frozen=True)
class Flags:
    causal: bool
    mask: int  # 0 none, 1 bool keep, 2 additive
    sinks: bool
    split: bool

    def label(self) -> str:
        parts = [
            "causal" if self.causal else "",
            ["", "bool", "additive"][self.mask],
            "sinks" if self.sinks else "",
            "split" if self.split else "",
        ]
        return "+".join(p for p in parts if p) or "plain"


def supported(*, backend_name: str, dtype, D: int) -> bool:
    name = str(dtype).split(".")[-1]
    return (
        backend_name in ("cuda", "metal") and name in SUPPORTED_DTYPES and D in SUPPORTED_HEAD_DIMS
    )


def choose_tile(*, rows: int, D: int, backend_name: str = "cuda") -> Tile:
    if TILE_OVERRIDE is not None:
        return TILE_OVERRIDE
    if backend_name == "metal":  # 32 KB of threadgroup memory: Q, K and V tiles, one stage
        if D > 128:
            return Tile(mw=2, mt=1, bc=16, m=8) if rows > 8 else Tile(mw=1, mt=1, bc=16, m=8)
        if rows > 16:
            return Tile(mw=4, mt=1, bc=32, m=8)
        return Tile(mw=2, mt=1, bc=32, m=8) if rows > 8 else Tile(mw=1, mt=1, bc=32, m=8)
    if D > 128:
        return Tile(mw=4, mt=1, bc=32) if rows > 16 else Tile(mw=1, mt=1, bc=32)
    if rows <= 16:  # decode: 1, 2 and 4 warps time alike here (docs/sdpa.md)
        return Tile(mw=2, mt=1, bc=64)
    if rows <= 64:
        return Tile(mw=4, mt=1, bc=64)
    return Tile(mw=4, mt=2, bc=64)


def resident_blocks(tile: Tile, D: int, backend_name: str) -> int:
    """Blocks of this tile one SM (GPU core) holds at once, by shared memory and threads."""
    smem = 227 * 1024 if backend_name == "cuda" else 32 * 1024
    by_smem = smem // tile.smem_bytes(D) if backend_name == "cuda" else 1
    return max(1, min(by_smem, 2048 // tile.threads, 32))


def choose_splits(
    *, blocks: int, kL: int, tile: Tile, D: int = 128, backend_name: str = "cuda"
) -> int:
    """No split when the row tiles fill one wave of resident blocks; else about four waves of
    blocks, each over >= 8 key tiles."""
    if SPLITS_OVERRIDE is not None:
        return max(1, min(SPLITS_OVERRIDE, math.ceil(kL / tile.bc)))
    wave = resident_blocks(tile, D, backend_name) * backend_mod.compute_units(backend_name).count
    if blocks >= wave:  # the row tiles alone fill the GPU
        return 1
    target = 4 * wave
    want = math.ceil(target / blocks)
    most = max(1, kL // (8 * tile.bc))
    return max(1, min(want, most))


def _float_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def _read(name: str) -> str:
    src = (HERE / name).read_text()
    return SOURCE_PATCH(name, src) if SOURCE_PATCH is not None else src


_KERNELS: dict = {}  # keyed by the SOURCE_PATCH object itself, not its id(): a freed patch's id
#                      can come back for the next one and would return the stale kernel


def _metal_header(*, vector_loads: bool) -> str:
    """flash_common.metal with NIAH_VECTOR_LOADS defined ahead of it (0 or 1)."""
    return f"#define NIAH_VECTOR_LOADS {int(vector_loads)}\n" + _read("flash_common.metal")


def _fwd_kernel(backend_name: str, tile: Tile, D: int, *, vector_loads: bool = True):
    vector_loads = vector_loads or backend_name == "cuda"  # the switch is Metal's
    key = ("fwd", backend_name, tile, D, vector_loads, SOURCE_PATCH)
    if key not in _KERNELS:
        if backend_name == "cuda":
            _KERNELS[key] = mx.fast.cuda_kernel(
                name=f"niah_flash_fwd_{tile}",
                input_names=["q", "k", "v", "params", "mask", "sinks"],
                output_names=["out", "lse"],
                header=_read("flash_common.cuh"),
                source=_read("flash_fwd.cu"),
                ensure_row_contiguous=False,
                shared_memory=tile.smem_bytes(D),
            )
        else:
            _KERNELS[key] = mx.fast.metal_kernel(
                name=f"niah_flash_fwd_{tile}_{'vec' if vector_loads else 'scalar'}",
                input_names=["q", "k", "v", "params", "mask", "sinks"],
                output_names=["out", "lse"],
                header=_metal_header(vector_loads=vector_loads),
                source=_read("flash_fwd.metal"),
                ensure_row_contiguous=False,
            )
    return _KERNELS[key]


def _combine_kernel(backend_name: str):
    key = ("combine", backend_name, SOURCE_PATCH)
    if key not in _KERNELS:
        make = mx.fast.cuda_kernel if backend_name == "cuda" else mx.fast.metal_kernel
        header = (
            _read("flash_common.cuh")
            if backend_name == "cuda"
            else _metal_header(vector_loads=False)
        )  # the combine has no vector loads
        source = _read("flash_combine.cu" if backend_name == "cuda" else "flash_combine.metal")
        _KERNELS[key] = make(
            name="niah_flash_combine",
            input_names=["opart", "lpart", "sinks"],
            output_names=["out", "lse"],
            header=header,
            source=source,
        )
    return _KERNELS[key]


def flags_for(*, mask, sinks, causal_shift, split: bool) -> Flags:
    causal = isinstance(mask, str) or (mask is None and causal_shift is not None)
    kind = 0
    if mask is not None and not isinstance(mask, str):
        kind = 1 if mask.dtype == mx.bool_ else 2
    return Flags(causal=causal, mask=kind, sinks=sinks is not None, split=split)


def plan(
    *, q_shape, k_shape, backend_name: str, tile: Tile | None = None, splits: int | None = None
) -> tuple[Tile, int, int]:
    """(tile, splits, keys per split) for these shapes."""
    B, Hq, qL, D = q_shape
    Hkv, kL = k_shape[1], k_shape[2]
    rows = (Hq // Hkv) * qL
    tile = tile or choose_tile(rows=rows, D=D, backend_name=backend_name)
    row_tiles = math.ceil(rows / tile.rows)
    if splits is None:
        splits = choose_splits(
            blocks=row_tiles * B * Hkv, kL=kL, tile=tile, D=D, backend_name=backend_name
        )
    split_len = math.ceil(math.ceil(kL / splits) / tile.bc) * tile.bc
    splits = max(1, math.ceil(kL / split_len))
    return tile, splits, split_len


def _operands(q, k, *, mask, sinks, causal_shift, scale: float, split_len: int):
    """The kernel's params (causal shift, scale bits, split length), mask and sinks arrays
    (a placeholder where the build reads none)."""
    qL, kL = q.shape[2], k.shape[2]
    if isinstance(mask, str):
        shift = kL - qL
    elif mask is None and causal_shift is not None:
        shift = int(causal_shift)
    else:
        shift = 0
    params = mx.array([shift, _float_bits(scale), split_len], dtype=mx.int32)
    if mask is not None and not isinstance(mask, str):  # flags_for's array mask
        mask_arr = mx.broadcast_to(mask, (q.shape[0], q.shape[1], qL, kL))
    else:
        mask_arr = mx.zeros((1, 1, 1, 1), dtype=mx.bool_)
    sinks_arr = sinks.astype(q.dtype) if sinks is not None else mx.zeros((1,), dtype=q.dtype)
    return params, mask_arr, sinks_arr


def _build_layout(q, *, tile: Tile, flags: Flags, splits: int, out_dtype):
    """The forward kernel's template, output shapes and output dtypes: float32 partials per
    split when the keys are split, else the output in out_dtype and the lse."""
    B, Hq, qL, D = q.shape
    template = [
        ("T", q.dtype),
        ("D", D),
        ("MW", tile.mw),
        ("MT", tile.mt),
        ("BC", tile.bc),
        ("CAUSAL", flags.causal),
        ("MASK", flags.mask),
        ("SINKS", flags.sinks),
        ("SPLIT", flags.split),
    ]
    if flags.split:
        return template, [(splits, B, Hq, qL, D), (splits, B * Hq * qL)], [mx.float32] * 2
    return template, [(B, Hq, qL, D), (B, Hq, qL)], [out_dtype, mx.float32]


def flash_attention_with_lse(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    *,
    scale: float,
    mask=None,
    sinks: mx.array | None = None,
    causal_shift: int | None = None,
    backend_name: str = "cuda",
    tile: Tile | None = None,
    splits: int | None = None,
    out_dtype=None,
    stream=None,
    vector_loads: bool = True,
) -> tuple[mx.array, mx.array]:
    """Fused attention over all of k/v: (out in out_dtype or q.dtype, lse float32 [B, Hq, qL]).
    `vector_loads` picks Metal's build (NIAH_VECTOR_LOADS 1 or 0); CUDA ignores it."""
    out_dtype = out_dtype or q.dtype
    B, Hq, qL, D = q.shape
    Hkv = k.shape[1]
    if isinstance(mask, str) and mask != "causal":
        raise ValueError(f"unknown mask {mask!r}: use 'causal', an array or None")
    tile, splits, split_len = plan(
        q_shape=q.shape, k_shape=k.shape, backend_name=backend_name, tile=tile, splits=splits
    )
    flags = flags_for(mask=mask, sinks=sinks, causal_shift=causal_shift, split=splits > 1)
    params, mask_arr, sinks_arr = _operands(
        q, k, mask=mask, sinks=sinks, causal_shift=causal_shift, scale=scale, split_len=split_len
    )
    rows = (Hq // Hkv) * qL
    row_tiles = math.ceil(rows / tile.rows)
    template, out_shapes, out_dtypes = _build_layout(
        q, tile=tile, flags=flags, splits=splits, out_dtype=out_dtype
    )
    extra = {"stream": stream} if stream is not None else {}
    kern = _fwd_kernel(backend_name, tile, D, vector_loads=vector_loads)
    out, lse = kern(
        inputs=[q, k, v, params, mask_arr, sinks_arr],
        template=template,
        grid=(row_tiles * tile.threads, B * Hkv, splits),
        threadgroup=(tile.threads, 1, 1),
        output_shapes=out_shapes,
        output_dtypes=out_dtypes,
        **extra,
    )
    if not flags.split:
        return out, lse
    comb = _combine_kernel(backend_name)
    out, lse = comb(
        inputs=[out, lse, sinks_arr],
        template=[("O", out_dtype), ("D", D), ("SINKS", flags.sinks)],
        grid=(B * Hq * qL * D, 1, 1),
        threadgroup=(256, 1, 1),
        output_shapes=[(B, Hq, qL, D), (B, Hq, qL)],
        output_dtypes=[out_dtype, mx.float32],
        **extra,
    )
    return out, lse
