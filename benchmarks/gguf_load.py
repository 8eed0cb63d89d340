"""GGUF conversion time, side by side in one run: each block type dequantized by the gguf
package (numpy) and by niah.gguf.dequant (MLX ops, default device), each followed by the
same 8-bit re-quantization; then a synthetic K-quant file read cold (conversion + weight
cache write) and warm (weight cache hit).

    python benchmarks/gguf_load.py [--rows 1536 --cols 8960 --layers 8]

Blocks are random (valid scales), which costs the dequantizers what real weights cost.
The cache goes to a temporary folder, never the user's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALE_AT = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q5_0": (0,), "Q8_0": (0,)}


def random_blocks(rng, type_name: str, rows: int, cols: int) -> np.ndarray:
    from niah.gguf.header import GGML_TYPES

    _, per_block, size = next(v for v in GGML_TYPES.values() if v[0] == type_name)
    n = rows * cols // per_block
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for at in SCALE_AT[type_name]:
        b[:, at : at + 2] = (
            rng.uniform(-0.02, 0.02, n).astype(np.float16).view(np.uint8).reshape(n, 2)
        )
    return b.reshape(rows, -1)


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare_types(rows: int, cols: int, repeats: int) -> None:
    import gguf
    import mlx.core as mx
    from gguf.quants import dequantize as numpy_dequantize

    from niah.gguf.dequant import dequantize

    rng = np.random.default_rng(0)
    print(
        f"dequantize + 8-bit quantize, {rows}x{cols}, median of {repeats} "
        f"(device {mx.default_device()}):"
    )
    for name in SCALE_AT:
        raw = random_blocks(rng, name, rows, cols)

        def numpy_path(raw=raw, name=name):
            v = numpy_dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(rows, cols)
            mx.eval(mx.quantize(mx.array(np.ascontiguousarray(v)), group_size=64, bits=8))

        def mlx_path(raw=raw, name=name):
            mx.eval(mx.quantize(dequantize(raw, name, (rows, cols)), group_size=64, bits=8))

        a, b = _median_s(numpy_path, repeats), _median_s(mlx_path, repeats)
        print(f"  {name}: numpy {a:.3f} s, mlx {b:.3f} s, numpy/mlx {a / b:.2f}x")


def write_file(path: Path, *, layers: int, rows: int, cols: int) -> None:
    import gguf

    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "llama")
    for i in range(layers):
        for j, kind in enumerate(("Q4_K", "Q6_K", "Q4_K")):
            w.add_tensor(
                f"blk.{i}.t{j}.weight",
                random_blocks(rng, kind, rows, cols),
                raw_dtype=gguf.GGMLQuantizationType[kind],
            )
        w.add_tensor(f"blk.{i}.norm.weight", np.ones(cols, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cold_and_warm(layers: int, rows: int, cols: int) -> None:
    from niah.gguf.read import read_gguf

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NIAH_CACHE_DIR"] = str(Path(tmp) / "cache")
        path = Path(tmp) / "synthetic.gguf"
        write_file(path, layers=layers, rows=rows, cols=cols)
        size = path.stat().st_size / 1024**2
        for label in ("cold (convert + store)", "warm (cache hit)"):
            t = time.perf_counter()
            raw = read_gguf(path)
            print(
                f"  read {size:.0f} MiB file, {label}: {time.perf_counter() - t:.2f} s "
                f"(cache {raw.cache})"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1536)
    ap.add_argument("--cols", type=int, default=8960)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    compare_types(args.rows, args.cols, args.repeats)
    cold_and_warm(args.layers, args.rows, args.cols)


if __name__ == "__main__":
    main()
