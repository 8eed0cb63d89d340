"""Per-trial peak memory, traced: MLX's active memory just before each generation and the
peak it reads, for the same small grid under every warm-up mode, with and without prefix reuse.

    python benchmarks/peak_trace.py MODEL

Shows whether a trial's peak differs because something earlier is still held (the active
memory before it differs) or within the trial itself (same memory before, different peak).
docs/bench/peak-trace-h200-2026-12-04.txt is its output on the H200 (run from a scratch folder
as tmp_gpu/peak.py, the same file).
"""

from __future__ import annotations

import sys


def _traced(original):
    """niah.generation.generate, printing the active memory before it and the peak it read."""
    import mlx.core as mx

    from niah.generation import free_memory

    def traced(*args, **kwargs):
        free_memory()
        before, cached = mx.get_active_memory(), mx.get_cache_memory()
        gen = original(*args, **kwargs)
        print(
            f"  generate: active before {before / 2**30:.3f} GiB (cache {cached / 2**30:.3f}), "
            f"peak {gen.peak_memory_bytes / 2**30:.3f}, prefilled {gen.prefilled}, "
            f"reused {gen.reused}, tokens {gen.tokens}",
            flush=True,
        )
        return gen

    return traced


def main(path: str) -> None:
    import mlx.core as mx

    import niah.generation as generation
    import niah.model as model
    from niah.config import RunConfig
    from niah.model import ModelSession
    from niah.run import run_sweep

    generation.generate = model.generate = _traced(generation.generate)
    session = ModelSession(path)
    print(
        "weights",
        session.info.weight_bytes / 2**30,
        "active after load",
        mx.get_active_memory() / 2**30,
    )
    for mode in ("off", "shapes", "once"):
        for reuse in (True, False):
            cfg = RunConfig(
                model=path,
                contexts=(1024, 4096),
                depths=(0.5,),
                samples=3,
                prefix_reuse=reuse,
                out=f"/tmp/peak-{mode}-{reuse}",
            )
            print(f"== warm-up {mode}, prefix reuse {reuse}", flush=True)
            result = run_sweep(cfg, session=session, warm_up=mode)
            for rec in result.records:
                print(
                    f"  record ctx {rec['context']} sample {rec['sample']} "
                    f"{rec['prefix_reuse']} peak {rec['peak_memory_bytes'] / 2**30:.3f}"
                )


if __name__ == "__main__":
    main(sys.argv[1])
