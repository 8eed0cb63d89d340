"""What `niah run` and `niah report` print about a set of records: a header naming the run(s),
then the table, the totals, the effective context (report only) and the SUSPECT lines. One
summary for both commands; the CLI only prints the lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import format_context
from ..scoring import SKIP
from .plausibility import suspect
from .stats import accuracy, effective_context
from .tables import (
    beyond_trained,
    cut_answers_line,
    format_table,
    task_lines,
    totals_line,
    trained_legend,
)


@dataclass(frozen=True)
class Summary:
    lines: list[str]  # for stdout
    warnings: list[str] = field(default_factory=list)  # for stderr, each a whole line


def summary(
    records: list[dict], *, header: list[str], effective_threshold: float | None = None
) -> Summary:
    """Header, table, totals, effective context (when a threshold is given), the task x context
    table (several tasks or a normalised one), SUSPECT lines."""
    legend = trained_legend(records)
    lines = [
        *header,
        "",
        format_table(records),
        *([legend] if legend else []),
        "",
        totals_line(records),
    ]
    if effective_threshold is not None:
        eff = effective_context(records, threshold=effective_threshold)
        lines.append(
            f"Effective context (>= {effective_threshold:.0%} of the shortest "
            f"context's accuracy): {format_context(eff) if eff else 'none'}"
        )
    lines += task_lines(records, threshold=effective_threshold)
    for r in records:
        why = suspect(r)
        if why:
            lines.append(
                f"SUSPECT: context {r['context']} depth {r['depth']:g} sample {r['sample']}: {why}"
            )
    cut = cut_answers_line(records)
    return Summary(lines=lines, warnings=[cut] if cut else [])


def fail_under_line(records: list[dict], fail_under: float) -> str | None:
    """The --fail-under verdict when accuracy is below it, else None. Every scored trial the
    run asked for counts, those past the trained length too, and the line says how many of
    them there were (--refuse-beyond-trained gates on the trained range only)."""
    acc = accuracy(records) or 0.0
    if acc >= fail_under:
        return None
    scored = [r for r in records if r["verdict"] != SKIP]
    beyond = sum(map(beyond_trained, scored))
    what = f"{len(scored)} trial{'s' if len(scored) != 1 else ''}"
    if beyond:
        what += f" ({beyond} beyond the trained length)"
    digits = next((d for d in range(1, 7) if f"{acc:.{d}%}" != f"{fail_under:.{d}%}"), 6)
    return f"accuracy {acc:.{digits}%} over {what} is below --fail-under {fail_under:.{digits}%}"


def run_header(
    records: list[dict], *, folder: Path, model: str, ran: int, done: int, world: int = 1
) -> list[str]:
    """`niah run`'s header. Under mlx.launch (world > 1) rank 0 prints, and its counts cover
    only its own share, so the header also says how many trials the table holds."""
    counts = f"{ran} run, {done} already done"
    if world > 1:
        counts = f"{len(records)} trials in the table from {world} ranks (rank 0: {counts})"
    return [
        f"Run folder: {folder}",
        f"Model: {records[0]['model'] if records else model} · device "
        f"{devices(records)}{mlx_settings(records)} · {counts}",
    ]


def devices(records: list[dict]) -> str:
    """Every device the records name, in the order first met ('?' for none): a folder resumed
    on another card of the same backend holds both, and the header must not name only one."""
    names = list(dict.fromkeys(str(r.get("device", "?")) for r in records))
    return " + ".join(names) if names else "?"


def mlx_settings(records: list[dict]) -> str:
    """' · NAME=VALUE' for the MLX batching settings the records were made under (mlx_env:
    they change a GPU trial's peak memory and time, e.g. --repeatable-memory); '' when none."""
    envs = list(dict.fromkeys(r["mlx_env"] for r in records if r.get("mlx_env")))
    return f" · {' + '.join(envs)}" if envs else ""


def pooled_header(runs: list[tuple[str, list[dict]]]) -> list[str]:
    """`niah report`'s header: one line per run folder."""
    return [
        f"Run: {name} · model {recs[0]['model']} · device {devices(recs)}{mlx_settings(recs)}"
        for name, recs in runs
    ]
