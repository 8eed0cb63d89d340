"""Stock mx.fast SDPA against each niah route, side by side in one run.

Shapes (GPU; --quick or CPU uses smaller ones): decode qL 1 at kL 64K-1M, prefill step
qL 2048 at kL 64K-256K causal, and qL 16 at 256K. Prints ms, TFLOP/s (GB/s of K/V read for
decode) and the ratio to stock (higher is better: stock_ms / route_ms).

    python benchmarks/sdpa.py [--quick] [--routes q-split,kv-chunks] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import median_ms  # noqa: E402


def flops(B, Hq, qL, kL, D, causal):
    pairs = qL * (kL - qL) + qL * (qL + 1) // 2 if causal and qL > 1 else qL * kL
    return 4.0 * B * Hq * D * pairs


def main() -> None:
    import mlx.core as mx

    from niah.kernels import chunk_attention_fn
    from niah.model import device_description
    from niah.sdpa.dispatch import (STOCK_SDPA, ChunkConfig, backend, fused_fn, kv_route, q_split,
                                    ran_labels, work_plan)

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--routes", default="q-split,kv-chunks")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--chunk", type=int, default=32768)
    ap.add_argument("--q-block", type=int, default=1024)
    args = ap.parse_args()
    gpu = backend() in ("cuda", "metal")
    quick = args.quick or not gpu
    dtype = getattr(mx, args.dtype or ("bfloat16" if gpu else "float32"))
    if quick:
        Hq, Hkv, D = 8, 2, 64
        shapes = [("decode", 1, 16384, False), ("decode", 1, 65536, False),
                  ("prefill", 512, 16384, True), ("qL16", 16, 65536, True)]
        chunk = min(args.chunk, 8192)
    else:
        Hq, Hkv, D = 32, 8, 128
        shapes = [("decode", 1, 65536, False), ("decode", 1, 262144, False),
                  ("decode", 1, 1048576, False), ("prefill", 2048, 65536, True),
                  ("prefill", 2048, 131072, True), ("prefill", 2048, 262144, True),
                  ("qL16", 16, 262144, True), ("qL64", 64, 131072, True)]
        chunk = args.chunk
    routes = [r for r in args.routes.split(",") if r]
    print(f"# niah sdpa bench on {device_description()}, mlx {mx.__version__}, {dtype}, "
          f"Hq {Hq}, Hkv {Hkv}, D {D}, chunk {chunk}, q-block {args.q_block}")
    print(f"| shape | qL | kL | route | ms | TFLOP/s | GB/s | vs stock |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, qL, kL, causal in shapes:
        mx.random.seed(0)
        q = mx.random.normal((1, Hq, qL, D)).astype(dtype)
        k = mx.random.normal((1, Hkv, kL, D)).astype(dtype)
        v = mx.random.normal((1, Hkv, kL, D)).astype(dtype)
        mx.eval(q, k, v)
        mask = "causal" if causal else None
        scale = D ** -0.5
        fl = flops(1, Hq, qL, kL, D, causal)
        kv_gb = 2 * k.nbytes / 1e9
        fns = {"stock": lambda: STOCK_SDPA(q, k, v, scale=scale, mask=mask)}
        config = ChunkConfig(threshold=0, chunk_size=chunk, q_block=args.q_block)
        plan = work_plan(q, k, config=config, fused=True)  # Metal: the FLOP budget per call
        fused = fused_fn(q, k, v, mask=mask, chunk_size=plan.chunk, q_block=plan.q_block,
                         chunk_fn=chunk_attention_fn(q=q, k=k, v=v))
        if "q-split" in routes:
            fns["q-split"] = lambda: q_split(q, k, v, scale=scale, mask=mask, q_block=args.q_block)
        if "kv-chunks" in routes:
            fns["kv-chunks"] = lambda: kv_route(q, k, v, scale=scale, mask=mask, config=config,
                                                chunk_fn=fused)[0]
        base = None
        for label, fn in fns.items():
            before = Counter(getattr(fused, "ran", None) or {})
            try:
                ms = median_ms(fn, warmup=2, repeats=5 if kL <= 262144 else 3)
            except Exception as exc:  # out of memory on a small device
                print(f"| {name} | {qL} | {kL} | {label} | failed: {type(exc).__name__} | | | |")
                continue
            if label == "kv-chunks":  # named by what its chunks ran, counted, not assumed
                label = "+".join(ran_labels(fused, before))
            base = ms if label == "stock" else base
            ratio = f"{base / ms:.2f}x" if base else "-"
            print(f"| {name} | {qL} | {kL} | {label} | {ms:.3f} | {fl / ms / 1e9:.{1 if gpu else 3}f} | "
                  f"{kv_gb / ms * 1e3:.0f} | {ratio} |", flush=True)
        del q, k, v
        mx.clear_cache()


if __name__ == "__main__":
    main()
