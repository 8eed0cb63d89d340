"""Reports from run folders: what `niah run` and `niah report` print and write.

    stats.py         a trial's score and time, accuracy, Wilson interval, effective context,
                     a normalised task's base score (NoLiMa)
    tables.py        the contexts x depths table (text, Markdown), totals, cut-answer warning,
                     the task x context table
    comparison.py    runs side by side (--compare)
    plausibility.py  the guard against physically impossible timings (SUSPECT)
    summary.py       the one summary both commands print, and their headers
    pool.py          reading run folders and pooling those of one experiment
    exports.py       the export registry (CSV, JSON, Parquet, Markdown, heatmap, JUnit),
                     written atomically; heatmap.py and junit.py draw two of them
                     (niah.report.heatmap / .junit are those modules)

Everything takes records (dicts, one per trial, as stored in trials.jsonl) and returns text
or writes files; nothing here runs a model.
"""

from .comparison import compare
from .exports import (
    EXPORT_COLUMNS_FIRST,
    EXPORTS,
    Export,
    check_target,
    check_targets,
    to_frame,
    write_atomic,
    write_exports,
)
from .plausibility import DEFAULT_PEAK, DEVICE_PEAKS, attention_flops, suspect
from .stats import (
    accuracy,
    base_score,
    effective_context,
    effective_normalised,
    normalised_by_context,
    trial_score,
    trial_seconds,
    wilson,
)
from .summary import Summary, fail_under_line, pooled_header, run_header, summary
from .tables import (
    BEYOND_MARK,
    Cell,
    cells,
    cut_answers_line,
    fmt_seconds,
    format_markdown,
    format_table,
    row_label,
    table_rows,
    task_lines,
    task_table,
    totals_line,
    trained_legend,
)

__all__ = [
    "Cell",
    "DEFAULT_PEAK",
    "DEVICE_PEAKS",
    "EXPORTS",
    "EXPORT_COLUMNS_FIRST",
    "Export",
    "Summary",
    "accuracy",
    "attention_flops",
    "cells",
    "check_target",
    "check_targets",
    "compare",
    "cut_answers_line",
    "effective_context",
    "fmt_seconds",
    "format_markdown",
    "format_table",
    "pooled_header",
    "row_label",
    "run_header",
    "summary",
    "suspect",
    "table_rows",
    "to_frame",
    "totals_line",
    "trial_score",
    "trial_seconds",
    "wilson",
    "write_atomic",
    "write_exports",
    "base_score",
    "effective_normalised",
    "normalised_by_context",
    "task_lines",
    "task_table",
    "BEYOND_MARK",
    "fail_under_line",
    "trained_legend",
]
