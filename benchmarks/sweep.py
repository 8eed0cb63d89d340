"""A contexts x depths sweep with and without prefix reuse, side by side in one run.

Default: 3 contexts x 5 depths on the embedded model (CPU sizes 512, 1K, 2K; GPU 8K, 16K,
32K). Prints wall time of each and the ratio (target: reuse <= 0.6x), and checks that the
answers are identical.

    python benchmarks/sweep.py [--contexts 512,1k,2k] [--depths 0:1:0.25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from niah.backend import backend
    from niah.config import RunConfig, parse_contexts, parse_depths
    from niah.model import ModelSession, device_description
    from niah.run import run_sweep

    gpu = backend() in ("cuda", "metal")
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="8k,16k,32k" if gpu else "512,1k,2k")
    ap.add_argument("--depths", default="0:1:0.25")
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args()
    session = ModelSession(None)
    walls, answers = {}, {}
    print(
        f"# sweep benchmark on {device_description()}, {time.strftime('%Y-%m-%d')}, "
        f"contexts {args.contexts}, depths {args.depths}"
    )
    print("| prefix reuse | trials | wall s | prefilled tokens | ratio |")
    print("|---|---:|---:|---:|---:|")
    for reuse in (False, True):
        with tempfile.TemporaryDirectory() as out:
            cfg = RunConfig(
                model="default",
                contexts=parse_contexts(args.contexts),
                depths=parse_depths(args.depths),
                prefix_reuse=reuse,
                out=out,
                max_tokens=args.max_tokens,
                allow_beyond_trained=True,
            )
            t = time.perf_counter()
            result = run_sweep(cfg, session=session)
            walls[reuse] = time.perf_counter() - t
            answers[reuse] = [r["response"] for r in result.records]
            prefilled = sum(r["prefilled_tokens"] for r in result.records)
        ratio = walls[reuse] / walls[False]
        print(
            f"| {'on' if reuse else 'off'} | {len(answers[reuse])} | {walls[reuse]:.1f} | "
            f"{prefilled} | {ratio:.2f}x |",
            flush=True,
        )
    print(f"answers identical: {answers[True] == answers[False]}")


if __name__ == "__main__":
    main()
