"""Shared timing helper for the benchmark scripts: warm-up, then the median of repeats."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, *, warmup: int = 2, repeats: int = 5) -> float:
    import mlx.core as mx

    for _ in range(warmup):
        mx.eval(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
