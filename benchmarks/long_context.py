"""Long-context prefill: stock mlx-lm against niah on the same weights, side by side in one run.

Stock mlx-lm is mlx-lm itself: the GGUF is written to an mlx-lm folder with `niah convert`
(same weights, same --gguf-quant mode), opened with `mlx_lm.load` and run with
`mlx_lm.stream_generate` (prefill step 2048, the model as mlx-lm loads it). niah runs its own
session on the GGUF (float16 activations on GPU, weights dequantized on CPU, its prefill step
and SDPA route). Each context is run `--repeats` times per path: the first (cold: new shapes,
kernel compilation) is printed apart from the steady state (median of the others).

    python benchmarks/long_context.py [--model X.gguf] [--contexts 32k,128k] [--steps 2048,8192]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stock(model, tokenizer, ids):
    """One mlx-lm prefill (+1 token): (seconds, tokens/s, peak bytes)."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    last = None
    for response in stream_generate(model, tokenizer, ids, max_tokens=1, prefill_step_size=2048):
        last = response
    secs = time.perf_counter() - t0
    return secs, last.prompt_tps, mx.get_peak_memory()


def _niah(session, ids, *, step, route):
    from niah.sdpa import patched

    with patched(route) as state:
        gen = session.generate(ids, cache=session.make_cache(), prefill_step=step, max_tokens=1)
    return gen.prefill_s, gen.prefilled / gen.prefill_s, gen.peak_memory_bytes, state.summary()


def _row(ctx, path, step, runs, base_tps, note=""):
    cold, rest = runs[0], runs[1:]
    steady = statistics.median(r[1] for r in rest) if rest else None
    secs = statistics.median(r[0] for r in rest) if rest else None
    peak = max(r[2] for r in runs) / 2**30
    ratio = f"{steady / base_tps:.2f}x" if steady and base_tps else "-"
    print(
        f"| {ctx} | {path}{note} | {step} | {cold[0]:.2f} | {cold[1]:.0f} | "
        f"{secs:.2f} | {steady:.0f} | {peak:.1f} | {ratio} |"
        if steady
        else f"| {ctx} | {path}{note} | {step} | {cold[0]:.2f} | {cold[1]:.0f} | - | - | {peak:.1f} | - |",
        flush=True,
    )
    return steady


def _free():
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def main() -> None:
    from niah.blas import ensure_fast_blas

    ensure_fast_blas()  # Linux CPU: re-exec with OpenBLAS preloaded, as the CLI does
    import mlx.core as mx
    from mlx_lm import load

    from niah.backend import backend
    from niah.config import default_model_path, parse_contexts
    from niah.gguf.convert import convert
    from niah.haystack import PromptBuilder
    from niah.model import ModelSession, device_description

    gpu = backend() in ("cuda", "metal")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a .gguf file (default: embedded SmolLM2)")
    ap.add_argument("--gguf-quant", default="auto")
    ap.add_argument("--contexts", default="32k,128k,256k" if gpu else "8k")
    ap.add_argument("--steps", default="2048,8192,16384" if gpu else "2048")
    ap.add_argument("--route", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell; the first is cold")
    ap.add_argument("--skip-stock", action="store_true")
    args = ap.parse_args()
    contexts = parse_contexts(args.contexts)
    steps = [int(s) for s in args.steps.split(",")]
    gguf = args.model or default_model_path()

    session = ModelSession(gguf, gguf_quant=args.gguf_quant)
    stock = None
    if not args.skip_stock:
        folder = tempfile.mkdtemp(prefix="niah-bench-")
        convert(gguf, folder, quant=args.gguf_quant, force=True)
        stock = load(folder)
    builder = PromptBuilder(session.tokenizer)
    info = session.info
    print(
        f"# long-context prefill on {device_description()}, mlx {mx.__version__}, "
        f"{info.name} (weights {info.weights}, sha256 {info.digest[:12] if info.digest else '-'}), "
        f"{time.strftime('%Y-%m-%d')}; stock = mlx_lm.load on the niah-converted folder + "
        f"stream_generate; cold = first run of the cell, steady = median of the next "
        f"{args.repeats - 1}"
    )
    print(
        "| context | path | prefill step | cold s | cold tok/s | steady s | steady tok/s | "
        "peak GiB | steady vs stock |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for ctx in contexts:
        ids = builder.build(context=ctx, depth=0.5, value="1234567").ids.tolist()
        base = None
        if stock is not None:
            try:
                runs = [_stock(*stock, ids) for _ in range(args.repeats)]
                base = _row(ctx, "stock mlx-lm", 2048, runs, None)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"| {ctx} | stock mlx-lm | 2048 | no: {type(exc).__name__} | | | | | |")
            _free()
        for step in steps:
            try:
                runs = [
                    _niah(session, ids, step=step, route=args.route) for _ in range(args.repeats)
                ]
                _row(
                    ctx,
                    "niah",
                    step,
                    [r[:3] for r in runs],
                    base,
                    note=f" ({runs[-1][3]}, {session.compute_dtype})",
                )
            except Exception as exc:  # noqa: BLE001
                print(
                    f"| {ctx} | niah | {step} | no: {type(exc).__name__}: {str(exc)[:60]} | | | | | |"
                )
            _free()


if __name__ == "__main__":
    main()
