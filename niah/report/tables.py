"""The contexts x depths table: records grouped into cells, rendered as aligned text or
Markdown, with the totals line and the cut-answer warning printed under it; and the task x
context table (`task_table`) for records of several tasks or a normalised one. Rows past the
model's trained length carry BEYOND_MARK and `trained_legend` explains it under the table."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import format_context, past_trained
from ..scoring import ERROR, FAIL, NULL, PASS, SKIP
from .stats import (
    BASE_CONTEXT,
    NORMALISED_TASKS,
    accuracy,
    accuracy_by_context,
    base_score,
    effective_context,
    effective_normalised,
    normalised_by_context,
    trial_score,
    trial_seconds,
    wilson,
)


@dataclass(frozen=True)
class Cell:
    context: int
    depth: float
    label: str  # row label extra (KV settings) or ""
    n: int  # scored trials (SKIP excluded)
    passed: float  # sum of trial scores (1/0 per single-needle trial, fractions otherwise)
    verdicts: tuple[str, ...]
    seconds: float  # mean trial time
    beyond: bool = False  # the trials ran past the model's trained length (beyond_trained)


# The mark of a row (context) past the model's trained length, in every table and the heatmap.
BEYOND_MARK = "†"


def percent(x: float) -> str:
    """A rate as a percentage, whole where that tells it apart, with the decimals that keep
    a rate short of 1 from reading 100% (and one above 0 from reading 0%)."""
    for digits in range(4):
        text = f"{x:.{digits}%}"
        value = float(text[:-1])
        if not (x < 1 and value >= 100) and not (x > 0 and value == 0):
            return text
    return text


def num(x: float) -> str:
    """A pass count: 3 when whole, 2.50 otherwise."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def row_label(r: dict, *, show_step: bool = False) -> str:
    """Row suffix naming the per-trial axes that are not the grid's contexts and depths:
    quantized KV bits, rotating window and (when several are reported) the prefill step,
    so trials of different settings are never counted as samples of one cell."""
    parts = []
    if show_step and r.get("prefill_step"):
        parts.append(f"step{r['prefill_step']}")
    if r.get("kv_bits"):
        parts.append(f"kv{r['kv_bits']}")
    if r.get("max_kv_size"):
        parts.append(f"win{r['max_kv_size']}")
    return " ".join(parts)


def row_name(context: int, label: str, *, beyond: bool = False) -> str:
    return (
        format_context(context) + (f" {label}" if label else "") + (BEYOND_MARK if beyond else "")
    )


def beyond_trained(r: dict) -> bool:
    """Whether a trial ran past its model's trained length: its record's beyond_trained. A
    record without the field (another tool's, or edited) is judged from its trained_context,
    context and max_tokens as niah judges it (the context alone where it has no max_tokens),
    so that every report, and the HTML page, marks the same trials."""
    if "beyond_trained" in r:
        return bool(r["beyond_trained"])
    trained, context = r.get("trained_context"), r.get("context")
    if not isinstance(trained, int) or trained <= 0 or not isinstance(context, int):
        return False
    answer = r.get("max_tokens")
    return past_trained(
        context, max_tokens=answer if isinstance(answer, int) else 0, trained=trained
    )


def trained_legend(records: list[dict]) -> str | None:
    """The line under a table whose rows carry BEYOND_MARK; None when no trial is beyond."""
    beyond = [r for r in records if beyond_trained(r)]
    if not beyond:
        return None
    lengths = sorted({r["trained_context"] for r in beyond if r.get("trained_context")})
    of = f" ({' / '.join(map(str, lengths))} tokens, with --max-tokens)" if lengths else ""
    return (
        f"{BEYOND_MARK} past the model's trained length{of}: {len(beyond)} of "
        f"{len(records)} trials, measured as asked"
    )


def cells(records: list[dict]) -> list[Cell]:
    """One Cell per (context, row label, depth), sorted."""
    groups: dict[tuple, list[dict]] = {}
    show_step = len({r.get("prefill_step") for r in records}) > 1
    for r in records:
        groups.setdefault((r["context"], row_label(r, show_step=show_step), r["depth"]), []).append(
            r
        )
    out = []
    for (ctx, label, depth), rs in sorted(groups.items(), key=lambda kv: kv[0]):
        scored = [r for r in rs if r["verdict"] != SKIP]
        out.append(
            Cell(
                context=ctx,
                depth=depth,
                label=label,
                n=len(scored),
                passed=sum(map(trial_score, scored)),
                verdicts=tuple(r["verdict"] for r in rs),
                seconds=sum(map(trial_seconds, rs)) / len(rs),
                beyond=any(map(beyond_trained, rs)),
            )
        )
    return out


def fmt_seconds(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 10:
        return f"{s:.1f} s"
    return f"{s:.2f} s"


def _cell_text(c: Cell, *, samples: int) -> str:
    if samples == 1 and len(c.verdicts) == 1:
        partial = f" {percent(c.passed)}" if c.n and 0 < c.passed < 1 else ""
        return f"{c.verdicts[0]}{partial} ({fmt_seconds(c.seconds)})"
    if c.n == 0:
        return f"SKIP ({fmt_seconds(c.seconds)})"
    lo, hi = wilson(c.passed, c.n)
    return f"{num(c.passed)}/{c.n} [{lo:.0%}-{hi:.0%}] ({fmt_seconds(c.seconds)})"


def _depth_header(d: float) -> str:
    return f"Depth {d * 100:.4g}%"


def table_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the contexts x depths table."""
    cs = cells(records)
    depths = sorted({c.depth for c in cs})
    samples = max((len(c.verdicts) for c in cs), default=1)
    rows_by: dict[tuple, dict[float, Cell]] = {}
    for c in cs:
        rows_by.setdefault((c.context, c.label), {})[c.depth] = c
    header = ["Context"] + [_depth_header(d) for d in depths] + ["Accuracy"]
    rows = []
    for (ctx, label), by_depth in sorted(rows_by.items()):
        n = sum(c.n for c in by_depth.values())
        passed = sum(c.passed for c in by_depth.values())
        beyond = any(c.beyond for c in by_depth.values())
        row = [row_name(ctx, label, beyond=beyond)] + [
            _cell_text(by_depth[d], samples=samples) if d in by_depth else "-" for d in depths
        ]
        row.append(percent(passed / n) if n else "-")
        rows.append(row)
    return header, rows


def align(header: list[str], rows: list[list[str]]) -> str:
    """Plain aligned text, two spaces between columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]
    )


def format_table(records: list[dict]) -> str:
    """The contexts x depths table as plain aligned text."""
    return align(*table_rows(records))


def format_markdown(records: list[dict], *, title: str | None = None) -> str:
    """The table as Markdown (a `### title` above it when given) and the totals line."""
    header, rows = table_rows(records)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    legend = trained_legend(records)
    lines += ["", legend] if legend else []
    lines += ["", totals_line(records)]
    return "\n".join(lines) + "\n"


def totals_line(records: list[dict]) -> str:
    """`Total: N trials, P PASS, F FAIL...; accuracy A; T s`."""
    verdicts = (PASS, FAIL, NULL, SKIP, ERROR)
    counts = {v: sum(r["verdict"] == v for r in records) for v in verdicts}
    parts = [f"{counts[v]} {v}" for v in verdicts if counts[v] or v in (PASS, FAIL)]
    acc = accuracy(records)
    total_s = sum(map(trial_seconds, records))
    acc_text = percent(acc) if acc is not None else "-"
    return (
        f"Total: {len(records)} trials, {', '.join(parts)}; accuracy {acc_text}; "
        f"{fmt_seconds(total_s)}"
    )


def cut_answers_line(records: list[dict]) -> str | None:
    """A warning when trials that did not pass stopped at --max-tokens (finish "length"): their
    verdict may measure the cut answer, not retrieval."""
    cut = [r for r in records if r.get("finish") == "length" and r.get("verdict") in (FAIL, NULL)]
    if not cut:
        return None
    most = max(int(r.get("generated_tokens") or 0) for r in cut)
    return (
        f"warning: {len(cut)} trial(s) that did not pass stopped at the answer limit "
        f"({most} tokens) before the answer ended: their verdict may reflect the cut, not "
        "retrieval; rerun with a larger --max-tokens"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else percent(x)


def task_table(records: list[dict], *, threshold: float | None = None) -> str:
    """The task x context table of scores: one row per task (in order of appearance), a
    normalised row under each task of NORMALISED_TASKS (accuracy over its base score), and,
    given a threshold, each task's effective context (from the normalised row where there is
    one)."""
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r.get("task") or "single", []).append(r)
    contexts = sorted({r["context"] for r in records})
    beyond = {r["context"] for r in records if beyond_trained(r)}
    header = ["Task", *(format_context(c) + (BEYOND_MARK if c in beyond else "") for c in contexts)]
    header += ["Effective"] if threshold else []
    rows = []
    for task, recs in by_task.items():
        normalised = task in NORMALISED_TASKS
        raw = accuracy_by_context(recs)
        figures = [("", raw, None if normalised else effective_context)]
        if normalised:
            figures.append((" (normalised)", normalised_by_context(recs), effective_normalised))
        for suffix, scores, effective in figures:
            row = [task + suffix] + [_pct(scores.get(c)) for c in contexts]
            if threshold:
                eff = effective(recs, threshold=threshold) if effective else None
                row.append("" if effective is None else format_context(eff) if eff else "none")
            rows.append(row)
    return align(header, rows)


def task_lines(records: list[dict], *, threshold: float | None = None) -> list[str]:
    """The task table and its note, when the records hold several tasks or a normalised one;
    else nothing."""
    tasks = {r.get("task") or "single" for r in records}
    if len(tasks) < 2 and not tasks & set(NORMALISED_TASKS):
        return []
    lines = ["", task_table(records, threshold=threshold)]
    for task in sorted(tasks & set(NORMALISED_TASKS)):
        base = base_score([r for r in records if r.get("task") == task])
        lines.append(
            f"{task} (normalised): each context's score over the base score "
            f"{_pct(base)} (mean at contexts <= {format_context(BASE_CONTEXT)}, "
            "NoLiMa's normalisation)" + (" — no base to normalise by" if not base else "")
        )
    if threshold:
        lines.append(
            f"Effective: longest context keeping >= {threshold:.0%} of the shortest "
            "context's score (of the base score for normalised rows)"
        )
    return lines
