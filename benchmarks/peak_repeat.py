"""The same cell repeated: does a trial's peak memory read the same each time, and where does it
rise? Prints, per trial, MLX's peak active memory after each prefill block (mlx-lm's prompt
progress callback) and after the decode, then per cell the spread of the final peaks.

    python benchmarks/peak_repeat.py MODEL [--contexts 4k,16k] [--kv-bits none,8]
        [--repeats 6] [--cache-limit-zero]
    python benchmarks/peak_repeat.py --runs RUN_FOLDER [RUN_FOLDER ...]

--runs reads `niah run` folders instead (a cell repeated with --samples and
--no-prefix-reuse): the same cell lines from their records' peaks, with each cell's median
prefill and decode tokens/s, under the folder's recorded mlx_env.

--cache-limit-zero sets MLX's buffer-cache limit to 0 for the whole process (every freed buffer
goes back to the device at once), to tell a peak raised by reused, larger cached buffers from
one raised by buffers that in-flight GPU work still holds. MLX_MAX_OPS_PER_BUFFER,
MLX_MAX_MB_PER_BUFFER and MLX_USE_CUDA_GRAPHS in the environment change how much work the CUDA
backend batches per graph; the header line shows those set.
"""

from __future__ import annotations

import argparse
import os


def _traced(original, log):
    """niah.generation.generate with its prompt progress callback recording the peak so far."""
    import mlx.core as mx

    def traced(*args, **kwargs):
        inner, blocks = kwargs.get("on_prefill"), []

        def on_prefill(done, total):
            blocks.append((done, mx.get_peak_memory()))
            if inner is not None:
                inner(done, total)

        kwargs["on_prefill"] = on_prefill
        gen = original(*args, **kwargs)
        log.append((gen.prefilled, blocks, gen.peak_memory_bytes, gen.prefill_s))
        return gen

    return traced


def _gib(n: int) -> str:
    return f"{n / 2**30:.3f}"


def _cell(session, model: str, context: int, kv_bits, repeats: int, log: list) -> None:
    from niah.config import RunConfig
    from niah.run import run_sweep

    cfg = RunConfig(
        model=model,
        contexts=(context,),
        depths=(0.5,),
        samples=repeats,
        prefix_reuse=False,
        kv_bits=(kv_bits,),
        refuse_beyond_trained=False,
        out=f"/tmp/peak-repeat-{context}-{kv_bits}-{os.getpid()}",
    )
    start = len(log)
    run_sweep(cfg, session=session, warm_up="off")
    peaks = []
    for prefilled, blocks, peak, prefill_s in log[start:]:
        if prefilled != context:
            continue  # the run's own probe or warm-up generations
        trace = " ".join(f"{done}:{_gib(p)}" for done, p in blocks)
        print(
            f"  ctx {context} kv {kv_bits}: blocks {trace} | final {_gib(peak)} | "
            f"prefill {prefill_s:.3f} s",
            flush=True,
        )
        peaks.append(peak)
    if peaks:
        spread = max(peaks) / min(peaks) - 1
        print(
            f"cell ctx {context} kv {kv_bits}: {len(peaks)} trials, peak {_gib(min(peaks))}-"
            f"{_gib(max(peaks))} GiB, spread {100 * spread:.1f}%",
            flush=True,
        )


def _median(values: list) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


CELL_FIELDS = ("depth", "prefill_step", "max_kv_size", "device")  # one of each in a cell


def _run_cells(folder) -> dict:
    """A `niah run` folder's trials with a peak, by (context, kv_bits); SystemExit with one line
    when the folder is not one cell repeated (another depth, prefill step, max-kv or card in a
    cell, or a trial run with prefix reuse on: its cache held the previous trial's prefix, so
    its peak is not the same measurement) or cannot be read."""
    from pathlib import Path

    from niah.errors import NiahError
    from niah.store import folder_records, latest_by_key

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise SystemExit(f"{folder}: not a niah run folder (no config.json): pass a run folder")
    try:
        found = latest_by_key(folder_records(path)).values()
    except NiahError as exc:
        raise SystemExit(f"{folder}: {exc}") from None
    records = [r for r in found if r.get("peak_memory_bytes")]
    for r in records:
        if type(r["peak_memory_bytes"]) is not int or r["peak_memory_bytes"] < 0:
            raise SystemExit(
                f"{folder}: trial {r.get('key')} has peak_memory_bytes "
                f"{r['peak_memory_bytes']!r}, not a byte count: pass a folder niah run wrote"
            )
    if not records:
        raise SystemExit(f"{folder}: no trial with a peak memory: run the cell first")
    cells: dict = {}
    for r in records:
        cells.setdefault((r["context"], r.get("kv_bits")), []).append(r)
    for (context, kv_bits), rs in cells.items():
        for field in CELL_FIELDS:
            if len({r.get(field) for r in rs}) > 1:
                raise SystemExit(
                    f"{folder}: cell ctx {context} kv {kv_bits} has more than one {field}: "
                    "pass a folder that repeats one cell (one depth, step, max-kv and device, "
                    "--samples N)"
                )
    for r in records:
        if r.get("prefix_reuse") != "off":
            raise SystemExit(
                f"{folder}: a trial ran with prefix reuse on (prefix_reuse "
                f"{r.get('prefix_reuse')}): rerun with --no-prefix-reuse into a new --out"
            )
    return cells


def _median_text(values: list, fmt: str) -> str:
    present = [v for v in values if v is not None]
    return format(_median(present), fmt) if present else "-"


def _print_runs(folders: list[str]) -> None:
    """The cell lines of `niah run` folders, from their records (verdicts SKIP and ERROR,
    which have no peak, left out)."""
    from pathlib import Path

    every = [(folder, _run_cells(folder)) for folder in folders]  # all read before a line
    for folder, cells in every:
        records = [r for rs in cells.values() for r in rs]
        envs = sorted({r.get("mlx_env") or "{}" for r in records})
        print(
            f"# run folder {Path(folder).name}: {len(records)} trials, mlx_env {' / '.join(envs)}"
        )
        for (context, kv_bits), rs in sorted(cells.items(), key=lambda c: (c[0][0], c[0][1] or 0)):
            peaks = [r["peak_memory_bytes"] for r in rs]
            print(
                f"cell ctx {context} kv {kv_bits}: {len(rs)} trials, peak {_gib(min(peaks))}-"
                f"{_gib(max(peaks))} GiB, spread {100 * (max(peaks) / min(peaks) - 1):.1f}% | "
                f"median prefill {_median_text([r.get('prefill_tps') for r in rs], '.0f')} "
                f"tok/s, decode {_median_text([r.get('decode_tps') for r in rs], '.1f')} tok/s"
            )


def main() -> None:
    import sys

    if sys.argv[1:2] == ["--runs"]:
        if len(sys.argv) < 3:
            raise SystemExit("--runs needs one or more niah run folders")
        import warnings  # a skipped record (a corrupt line): one line on stderr

        warnings.formatwarning = lambda message, *_a, **_k: f"warning: {message}\n"
        _print_runs(sys.argv[2:])
        return
    import mlx.core as mx

    import niah.generation as generation
    import niah.model as model
    from niah.blas import ensure_fast_blas
    from niah.identity import mlx_env
    from niah.model import ModelSession
    from niah.parse import parse_contexts

    ensure_fast_blas()

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--contexts", default="4k,16k")
    ap.add_argument("--kv-bits", default="none,8")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--cache-limit-zero", action="store_true")
    args = ap.parse_args()
    if args.cache_limit_zero:
        mx.set_cache_limit(0)
    env = mlx_env() or "{}"
    print(f"# device {mx.default_device()}, cache limit zero {args.cache_limit_zero}, env {env}")
    log: list = []
    generation.generate = model.generate = _traced(generation.generate, log)
    session = ModelSession(args.model)
    bits = [None if b == "none" else int(b) for b in args.kv_bits.split(",")]
    for context in parse_contexts(args.contexts):
        for kv in bits:
            _cell(session, args.model, context, kv, args.repeats, log)


if __name__ == "__main__":
    main()
