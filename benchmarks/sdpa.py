"""Stock mx.fast SDPA against each niah route, side by side in one run (niah.sdpa.bench;
`niah sdpa bench` prints the same table from an installed package).

    python benchmarks/sdpa.py [--quick] [--routes q-split,kv-chunks] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from niah.sdpa.bench import run_bench

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--routes", default="q-split,kv-chunks")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--chunk", type=int, default=32768)
    ap.add_argument("--q-block", type=int, default=1024)
    args = ap.parse_args()
    run_bench(
        quick=args.quick,
        routes=[r for r in args.routes.split(",") if r],
        dtype=args.dtype,
        chunk=args.chunk,
        q_block=args.q_block,
    )


if __name__ == "__main__":
    main()
