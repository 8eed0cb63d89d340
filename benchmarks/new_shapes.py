"""What a NEW key length costs the stock SDPA against a repeated one, per model shape and route.

A prefill in steps and every decode token call attention with a key length never seen before.
If the backend builds something per shape (a cuDNN graph, a JIT kernel), each such call pays
it. This prints, side by side in one run, the median time of the same call repeated (warm)
and of calls whose key length grows by one each time (as decode does), for stock mx.fast and
niah's kv-chunks route, at the head shapes of the test models; the ratio new/warm says how
much of a long-context decode is per-shape overhead.

    python benchmarks/new_shapes.py [--kl 131072] [--calls 12]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {  # name: (Hq, Hkv, D)
    "smollm2-135m": (9, 3, 64),
    "qwen2.5-1.5b": (12, 2, 128),
    "qwen2.5-0.5b": (14, 2, 64),
}


def _time_calls(fn, q, make_kv, lengths) -> float:
    """Median ms of fn(q, k, v) over key lengths (each evaluated on its own)."""
    import mlx.core as mx

    times = []
    for L in lengths:
        k, v = make_kv(L)
        mx.eval(k, v)
        t0 = time.perf_counter()
        mx.eval(fn(q, k, v))
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    import mlx.core as mx

    from niah.model import device_description
    from niah.sdpa.dispatch import STOCK_SDPA, dispatch, resolve_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--kl", type=int, default=131072)
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--qls", default="1,2048")
    args = ap.parse_args()
    dtype = mx.float16
    print(
        f"# new key length vs repeated, {device_description()}, mlx {mx.__version__}, {dtype}, "
        f"kL from {args.kl}, {args.calls} calls"
    )
    print("| model shape | qL | route | warm ms | new-length ms | new / warm |")
    print("|---|---:|---|---:|---:|---:|")
    for name, (Hq, Hkv, D) in SHAPES.items():
        for qL in (int(x) for x in args.qls.split(",")):
            q = mx.random.normal((1, Hq, qL, D)).astype(dtype)
            base = mx.random.normal((1, Hkv, args.kl + args.calls + 8, D)).astype(dtype)

            def make_kv(L, base=base):
                return base[:, :, :L], base[:, :, :L]

            scale = D**-0.5
            config = resolve_config(threshold=1, chunk_size=32768)
            mask = "causal" if qL > 1 else None
            routes = {
                "stock": lambda q, k, v, scale=scale, mask=mask: STOCK_SDPA(
                    q, k, v, scale=scale, mask=mask
                ),
                # niah's route as a trial takes it (fused kernel where it passed its
                # self-test; the label printed by niah run says which)
                "kv-chunks": lambda q, k, v, scale=scale, mask=mask, config=config: dispatch(
                    q, k, v, scale=scale, mask=mask, route="kv-chunks", config=config
                ),
            }
            for route, fn in routes.items():
                _time_calls(fn, q, make_kv, [args.kl] * 3)  # compile the repeated shape
                warm = _time_calls(fn, q, make_kv, [args.kl] * args.calls)
                new = _time_calls(fn, q, make_kv, [args.kl + 1 + i for i in range(args.calls)])
                print(
                    f"| {name} (Hq {Hq}, Hkv {Hkv}, D {D}) | {qL} | {route} | {warm:.2f} | "
                    f"{new:.2f} | {new / warm:.1f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
