"""Time to build a 128K-token and a 1M-token prompt once the haystack is tokenized.

Targets: <= 0.2 s and <= 1 s. Uses the embedded model's tokenizer (SmolLM2 GGUF).

    python benchmarks/haystack_build.py
"""

from __future__ import annotations

import statistics
import time


def main() -> None:
    import mlx.core as mx

    from niah.config import default_model_path
    from niah.gguf import build_tokenizer
    from niah.haystack import PromptBuilder

    _, meta = mx.load(default_model_path(), return_metadata=True)
    tok = build_tokenizer(meta)
    builder = PromptBuilder(tok)
    t = time.perf_counter()
    builder.haystack.ensure(1 << 20)
    print(f"tokenize the 1M-token haystack once: {time.perf_counter() - t:.2f} s")
    print("| prompt | build time (median of 20) | target | ratio to target |")
    print("|---|---:|---:|---:|")
    for n, target in ((131072, 0.2), (1 << 20, 1.0)):
        times = []
        for i in range(20):
            t = time.perf_counter()
            p = builder.build(context=n, depth=(i % 11) / 10, value="1234567")
            times.append(time.perf_counter() - t)
            assert len(p.ids) == n
        med = statistics.median(times)
        print(f"| {n} tokens | {med * 1000:.2f} ms | {target:.1f} s | {med / target:.4f}x |")


if __name__ == "__main__":
    main()
