"""Is the first trial of each context as fast as the ones after it? Read from run folders.

A trial that pays one-time costs (kernel compilation, per-shape plans) reports a time that is
not the model's. For every context of each run folder given, this prints the first trial run
(write order) next to the median of the later trials of that context, and their ratio; a run
whose warm-up covers what the trials use shows ratios near 1. Compare folders of the same
model and grid side by side (e.g. `--warm-up shapes` against `--warm-up once`), and run them
with --no-prefix-reuse so every trial prefills the whole prompt (with reuse, later trials
prefill less by design and the ratio says nothing about warm-up).

    python benchmarks/first_cell.py RUN_FOLDER [RUN_FOLDER ...] [--field elapsed_s]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class FirstCell:
    folder: str
    warm_up: str
    context: int
    first_depth: float
    first_s: float
    later_median_s: float
    later: int

    @property
    def ratio(self) -> float:
        return self.first_s / self.later_median_s if self.later_median_s > 0 else float("inf")


def first_cells(folder: Path, *, field: str) -> list[FirstCell]:
    """One row per context with at least two timed trials, in context order."""
    from niah import store

    records = [r for r in store.read_trials(folder) if r.get(field) is not None]
    modes = [
        e.get("mode", "once") for e in store.read_run_log(folder) if e.get("event") == "warm-up"
    ]
    rows = []
    for context in sorted({r["context"] for r in records}):
        trials = [r for r in records if r["context"] == context]  # write order
        if len(trials) < 2:
            continue
        first, later = trials[0], [float(r[field]) for r in trials[1:]]
        rows.append(
            FirstCell(
                folder="/".join(folder.parts[-2:]),
                warm_up=",".join(modes) or "none",
                context=context,
                first_depth=first["depth"],
                first_s=float(first[field]),
                later_median_s=statistics.median(later),
                later=len(later),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument(
        "--field", default="elapsed_s", help="record field to compare (elapsed_s, prefill_s, ...)"
    )
    args = ap.parse_args()
    print(f"# first trial of each context vs the median of its later trials ({args.field})")
    print(
        "| run folder | warm-up | context | first trial s (depth) | later median s | "
        "later trials | first / later |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for folder in args.folders:
        for c in first_cells(folder, field=args.field):
            print(
                f"| {c.folder} | {c.warm_up} | {c.context} | {c.first_s:.3f} "
                f"({c.first_depth:g}) | {c.later_median_s:.3f} | {c.later} | {c.ratio:.2f}x |"
            )


if __name__ == "__main__":
    main()
