"""`niah sdpa bench`: stock mx.fast SDPA against each niah route, side by side in one run.

Shapes (GPU; `quick` or CPU uses smaller ones): decode qL 1 at kL 64K-1M, prefill step qL 2048
at kL 64K-256K causal, and qL 16 at 256K. Prints a Markdown table of ms, TFLOP/s (GB/s of K/V
read for decode) and the ratio to stock (higher is better: stock_ms / route_ms); kv-chunks is
labelled by what its chunks ran (kv-chunks/fused or kv-chunks/reference). Packaged so that the
command works from an installed wheel; benchmarks/sdpa.py is the same table from a checkout.
The kv-chunks row times the kernel route itself: a kernel that failed its self-test shows as
kv-chunks/reference here, whatever fallback dispatch would take.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

ROUTES = ("q-split", "kv-chunks")


@dataclass(frozen=True)
class Shape:
    name: str
    qL: int
    kL: int
    causal: bool


@dataclass(frozen=True)
class ShapeSet:
    Hq: int
    Hkv: int
    D: int
    shapes: tuple[Shape, ...]
    max_chunk: int | None = None  # caps the chunk size (small sets)


FULL = ShapeSet(
    Hq=32,
    Hkv=8,
    D=128,
    shapes=(
        Shape("decode", 1, 65536, False),
        Shape("decode", 1, 262144, False),
        Shape("decode", 1, 1048576, False),
        Shape("prefill", 2048, 65536, True),
        Shape("prefill", 2048, 131072, True),
        Shape("prefill", 2048, 262144, True),
        Shape("qL16", 16, 262144, True),
        Shape("qL64", 64, 131072, True),
    ),
)
QUICK = ShapeSet(
    Hq=8,
    Hkv=2,
    D=64,
    max_chunk=8192,
    shapes=(
        Shape("decode", 1, 16384, False),
        Shape("decode", 1, 65536, False),
        Shape("prefill", 512, 16384, True),
        Shape("qL16", 16, 65536, True),
    ),
)


def median_ms(fn, *, warmup: int = 2, repeats: int = 5) -> float:
    """Evaluate fn() `warmup` times, then the median wall time of `repeats` calls, in ms."""
    import mlx.core as mx

    for _ in range(warmup):
        mx.eval(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def attention_flops(*, B: int, Hq: int, qL: int, kL: int, D: int, causal: bool) -> float:
    """FLOPs of the (query, key) pairs a call computes (causal: those the mask keeps)."""
    pairs = qL * (kL - qL) + qL * (qL + 1) // 2 if causal and qL > 1 else qL * kL
    return 4.0 * B * Hq * D * pairs


def run_bench(
    *,
    quick: bool = False,
    routes=ROUTES,
    dtype: str | None = None,
    chunk: int = 32768,
    q_block: int = 1024,
    shapes: ShapeSet | None = None,
    echo=print,
) -> None:
    """Print the table. `shapes` overrides the set (FULL on a GPU, QUICK with `quick` or on
    the CPU)."""
    import mlx.core as mx

    from ..backend import backend

    try:
        info = mx.device_info()
    except Exception:  # noqa: BLE001 - an MLX without device_info
        info = {}
    device = info.get("device_name") or info.get("architecture") or "unknown"
    gpu = backend() in ("cuda", "metal")
    shapes = shapes or (QUICK if quick or not gpu else FULL)
    chunk = min(chunk, shapes.max_chunk or chunk)
    dt = getattr(mx, dtype or ("bfloat16" if gpu else "float32"))
    echo(
        f"# niah sdpa bench on {backend()} ({device}), mlx {mx.__version__}, {dt}, "
        f"Hq {shapes.Hq}, Hkv {shapes.Hkv}, D {shapes.D}, chunk {chunk}, q-block {q_block}"
    )
    echo("| shape | qL | kL | route | ms | TFLOP/s | GB/s | vs stock |")
    echo("|---|---:|---:|---|---:|---:|---:|---:|")
    for shape in shapes.shapes:
        for row in _shape_rows(
            shape, shapes, routes=routes, dtype=dt, chunk=chunk, q_block=q_block, gpu=gpu
        ):
            echo(row)
        mx.clear_cache()


def _shape_inputs(shape: Shape, shapes: ShapeSet, *, dtype):
    """Seeded random q, k, v of one shape, evaluated."""
    import mlx.core as mx

    mx.random.seed(0)
    q = mx.random.normal((1, shapes.Hq, shape.qL, shapes.D)).astype(dtype)
    k = mx.random.normal((1, shapes.Hkv, shape.kL, shapes.D)).astype(dtype)
    v = mx.random.normal((1, shapes.Hkv, shape.kL, shapes.D)).astype(dtype)
    mx.eval(q, k, v)
    return q, k, v


def _shape_rows(
    shape: Shape, shapes: ShapeSet, *, routes, dtype, chunk: int, q_block: int, gpu: bool
) -> list[str]:
    """One table row per route (stock first) for one shape."""
    from .dispatch import (
        STOCK_SDPA,
        ChunkConfig,
        fused_fn,
        kv_route,
        q_split,
        ran_labels,
        work_plan,
    )
    from .fused import chunk_attention_fn

    q, k, v = _shape_inputs(shape, shapes, dtype=dtype)
    mask = "causal" if shape.causal else None
    scale = shapes.D**-0.5
    config = ChunkConfig(threshold=0, chunk_size=chunk, q_block=q_block)
    plan = work_plan(q, k, config=config, fused=True)  # Metal: the FLOP budget per call
    fused = fused_fn(
        q,
        k,
        v,
        mask=mask,
        chunk_size=plan.chunk,
        q_block=plan.q_block,
        chunk_fn=chunk_attention_fn(q=q, k=k, v=v),
    )
    fns = {"stock": lambda: STOCK_SDPA(q, k, v, scale=scale, mask=mask)}
    if "q-split" in routes:
        fns["q-split"] = lambda: q_split(q, k, v, scale=scale, mask=mask, q_block=q_block)
    if "kv-chunks" in routes:
        fns["kv-chunks"] = lambda: kv_route(
            q, k, v, scale=scale, mask=mask, config=config, chunk_fn=fused
        )[0]
    flops = attention_flops(
        B=1, Hq=shapes.Hq, qL=shape.qL, kL=shape.kL, D=shapes.D, causal=shape.causal
    )
    kv_gb = 2 * k.nbytes / 1e9
    lead = f"| {shape.name} | {shape.qL} | {shape.kL} |"
    rows, base = [], None
    for label, fn in fns.items():
        before = Counter(getattr(fused, "ran", None) or {})
        try:
            ms = median_ms(fn, warmup=2, repeats=5 if shape.kL <= 262144 else 3)
        except Exception as exc:  # noqa: BLE001 - out of memory on a small device
            rows.append(f"{lead} {label} | failed: {type(exc).__name__} | | | |")
            continue
        if label == "kv-chunks":  # named by what its chunks ran, counted, not assumed
            label = "+".join(ran_labels(fused, before))
        base = ms if label == "stock" else base
        ratio = f"{base / ms:.2f}x" if base else "-"
        rows.append(
            f"{lead} {label} | {ms:.3f} | {flops / ms / 1e9:.{1 if gpu else 3}f} | "
            f"{kv_gb / ms * 1e3:.0f} | {ratio} |"
        )
    return rows
