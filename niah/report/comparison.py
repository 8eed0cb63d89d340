"""Runs side by side (`niah report --compare`): per cell, each run's verdicts, the accuracy
change against the first run (the baseline), and whether the verdict changed. A run's cell past
its model's trained length carries BEYOND_MARK (runs of other models or answer budgets may
differ there), and a line per such run under the table says so."""

from __future__ import annotations

from .stats import accuracy
from .tables import BEYOND_MARK, Cell, align, cells, num, percent, row_name, trained_legend


def compare(runs: list[tuple[str, list[dict]]]) -> str:
    """Per-cell comparison of runs (first is the baseline): accuracy, delta, verdict changes."""
    keyed = [(name, {(c.context, c.label, c.depth): c for c in cells(recs)}) for name, recs in runs]
    all_keys = sorted(set().union(*(set(k) for _, k in keyed)))
    header = (
        ["Context", "Depth"]
        + [name for name, _ in keyed]
        + [f"Δ {name}" for name, _ in keyed[1:]]
        + ["Changed"]
    )
    rows = []
    changed = missing = 0
    for key in all_keys:
        ctx, label, depth = key
        found = [(name, k.get(key)) for name, k in keyed]
        accs = [None if c is None or c.n == 0 else c.passed / c.n for _, c in found]
        verds = [_verdicts_text(c) for _, c in found]
        deltas = [
            "-" if a is None or accs[0] is None else f"{(a - accs[0]) * 100:+.0f}%"
            for a in accs[1:]
        ]
        status = _compare_status(found, verds)
        changed += status == "yes"
        missing += status.startswith("missing")
        shown = [
            v + (BEYOND_MARK if c is not None and c.beyond else "")
            for v, (_, c) in zip(verds, found)
        ]
        rows.append([row_name(ctx, label), f"{depth * 100:.4g}%", *shown, *deltas, status])
    summary = [
        f"{name}: accuracy {percent(acc)}" if (acc := accuracy(recs)) is not None else f"{name}: -"
        for name, recs in runs
    ]
    legends = [f"{name}: {text}" for name, recs in runs if (text := trained_legend(recs))]
    return "\n".join(
        [
            align(header, rows),
            *legends,
            "",
            "; ".join(summary)
            + f"; {changed} cell(s) changed verdict"
            + (f"; {missing} cell(s) missing from a run" if missing else ""),
        ]
    )


def _verdicts_text(c: Cell | None) -> str:
    if c is None:
        return "-"
    return "/".join(c.verdicts) if len(c.verdicts) <= 2 else f"{num(c.passed)}/{c.n}"


def _compare_status(cells_by_run: list[tuple[str, Cell | None]], verdicts: list[str]) -> str:
    """'missing in the baseline' / 'missing in NAME' when a run lacks the cell (not a change
    of verdict), 'yes' when the verdicts differ, '' otherwise."""
    if cells_by_run[0][1] is None:
        return "missing in the baseline"
    absent = [name for name, c in cells_by_run[1:] if c is None]
    if absent:
        return "missing in " + ", ".join(absent)
    return "yes" if len(set(verdicts)) > 1 else ""
