"""Long-context prefill: stock mlx-lm against niah, side by side in one run.

For each context: stock mlx-lm (`mlx_lm.stream_generate`, prefill step 2048, the model as
loaded: GGUF norms in float32) and niah's session (float16 activations on GPU, its prefill
step and SDPA route), both on the embedded SmolLM2. Prints prefill tokens/s, peak memory,
completed or not, and the ratio to stock. GPU default contexts: 32K, 128K, 256K; CPU: 8K.

    python benchmarks/long_context.py [--contexts 32k,128k,256k] [--steps 2048,8192]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import mlx.core as mx

    from niah.config import parse_contexts
    from niah.haystack import PromptBuilder
    from niah.model import ModelSession, device_description
    from niah.sdpa import patched
    from niah.sdpa.dispatch import backend

    gpu = backend() in ("cuda", "metal")
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="32k,128k,256k" if gpu else "8k")
    ap.add_argument("--steps", default="2048,8192,16384" if gpu else "2048")
    ap.add_argument("--route", default="auto")
    ap.add_argument("--skip-stock", action="store_true")
    args = ap.parse_args()
    contexts = parse_contexts(args.contexts)
    steps = [int(s) for s in args.steps.split(",")]

    stock_session = ModelSession(None, dequantize=not gpu)
    if gpu:  # undo niah's float16 cast: stock mlx-lm runs the model as loaded
        from niah.config import default_model_path
        from niah.gguf import load_gguf_model

        stock_session.model, _, _ = load_gguf_model(default_model_path())
    niah_session = ModelSession(None)
    builder = PromptBuilder(stock_session.tokenizer)
    print(f"# long-context prefill on {device_description()}, mlx {mx.__version__}, "
          f"SmolLM2-135M-Instruct (GGUF Q4_1), {time.strftime('%Y-%m-%d')}")
    print("| context | path | prefill step | prefill s | tokens/s | peak GiB | completed | vs stock |")
    print("|---:|---|---:|---:|---:|---:|---|---:|")

    def stock_run(ids):
        from mlx_lm import stream_generate

        mx.reset_peak_memory()
        last = None
        for resp in stream_generate(stock_session.model, stock_session.tokenizer, ids,
                                    max_tokens=1, prefill_step_size=2048):
            last = resp
        return len(ids) / last.prompt_tps, last.prompt_tps, mx.get_peak_memory()

    # Warm up both paths (kernel JIT and first-shape planning happen once per process).
    warm = builder.build(context=4096 if gpu else 256, depth=0.5, value="1").ids.tolist()
    stock_run(warm)
    for step in steps:
        with patched(args.route):
            niah_session.generate(warm, cache=niah_session.make_cache(), prefill_step=step,
                                  max_tokens=1)
    for ctx in contexts:
        ids = builder.build(context=ctx, depth=0.5, value="1234567").ids.tolist()
        base = None
        if not args.skip_stock:
            try:
                secs, tps, peak = stock_run(ids)
                base = tps
                print(f"| {ctx} | stock mlx-lm | 2048 | {secs:.2f} | {tps:.0f} | {peak / 2**30:.1f} | yes | 1.00x |", flush=True)
            except Exception as exc:
                print(f"| {ctx} | stock mlx-lm | 2048 | - | - | - | no: {type(exc).__name__} | - |", flush=True)
            gc.collect()
            mx.clear_cache()
        for step in steps:
            try:
                with patched(args.route) as state:
                    gen = niah_session.generate(ids, cache=niah_session.make_cache(),
                                                prefill_step=step, max_tokens=1)
                tps = gen.prefilled / gen.prefill_s
                ratio = f"{tps / base:.2f}x" if base else "-"
                print(f"| {ctx} | niah ({state.summary()}, {niah_session.compute_dtype}) | {step} | "
                      f"{gen.prefill_s:.2f} | {tps:.0f} | {gen.peak_memory_bytes / 2**30:.1f} | yes | {ratio} |", flush=True)
            except Exception as exc:
                print(f"| {ctx} | niah | {step} | - | - | - | no: {type(exc).__name__}: {str(exc)[:60]} | - |", flush=True)
            gc.collect()
            mx.clear_cache()


if __name__ == "__main__":
    main()
