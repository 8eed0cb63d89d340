"""Reports from run folders: the contexts x depths table (text and Markdown), exports
(CSV / JSON / Parquet), a heatmap PNG, Wilson intervals, effective context length, run
comparisons, JUnit XML, and the impossible-timing guard.

All functions take records (dicts, one per trial, as stored in trials.jsonl) and return strings
or write files; nothing here runs a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .config import format_context
from .errors import NiahError
from .scoring import ERROR, FAIL, NULL, PASS, SKIP

# Published dense peaks, used to flag physically impossible timings (FLOP/s; bytes/s).
DEVICE_PEAKS = {
    "h100": (989e12, 3.35e12),
    "h200": (989e12, 4.8e12),
    "a100": (312e12, 2.0e12),
    "m1": (10.4e12, 0.8e12), "m2": (13.6e12, 0.8e12), "m3": (14.2e12, 0.8e12),
    "m4": (17e12, 0.55e12), "apple": (40e12, 0.82e12),
    "cpu": (10e12, 0.5e12),
}
DEFAULT_PEAK = (2000e12, 8e12)


@dataclass(frozen=True)
class Cell:
    context: int
    depth: float
    label: str          # row label extra (KV settings) or ""
    n: int              # scored trials (SKIP excluded)
    passed: float       # sum of trial scores (1/0 per single-needle trial, fractions otherwise)
    verdicts: tuple[str, ...]
    seconds: float      # mean trial time


def trial_score(r: dict) -> float:
    """A trial's score in [0, 1]: the record's `score` (fraction of needles retrieved), else
    1 for PASS and 0 otherwise (records written before scores existed)."""
    value = r.get("score")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return 1.0 if r.get("verdict") == PASS else 0.0


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def _trial_seconds(r: dict) -> float:
    if r.get("elapsed_s") is not None:
        return float(r["elapsed_s"])
    return float((r.get("ttft_s") or 0) + (r.get("decode_s") or 0))


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


def cells(records: list[dict]) -> list[Cell]:
    groups: dict[tuple, list[dict]] = {}
    show_step = len({r.get("prefill_step") for r in records}) > 1
    for r in records:
        groups.setdefault((r["context"], row_label(r, show_step=show_step), r["depth"]),
                          []).append(r)
    out = []
    for (ctx, label, depth), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        scored = [r for r in rs if r["verdict"] != SKIP]
        out.append(Cell(context=ctx, depth=depth, label=label, n=len(scored),
                        passed=sum(map(trial_score, scored)),
                        verdicts=tuple(r["verdict"] for r in rs),
                        seconds=sum(map(_trial_seconds, rs)) / len(rs)))
    return out


def fmt_seconds(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 10:
        return f"{s:.1f} s"
    return f"{s:.2f} s"


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a pass rate (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _cell_text(c: Cell, *, samples: int) -> str:
    if samples == 1 and len(c.verdicts) == 1:
        partial = f" {c.passed:.0%}" if c.n and 0 < c.passed < 1 else ""
        return f"{c.verdicts[0]}{partial} ({fmt_seconds(c.seconds)})"
    if c.n == 0:
        return f"SKIP ({fmt_seconds(c.seconds)})"
    lo, hi = wilson(c.passed, c.n)
    return f"{_num(c.passed)}/{c.n} [{lo:.0%}-{hi:.0%}] ({fmt_seconds(c.seconds)})"


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
        name = format_context(ctx) + (f" {label}" if label else "")
        row = [name] + [_cell_text(by_depth[d], samples=samples) if d in by_depth else "-"
                        for d in depths]
        row.append(f"{passed / n:.0%}" if n else "-")
        rows.append(row)
    return header, rows


def format_table(records: list[dict]) -> str:
    """Plain aligned text, two spaces between columns."""
    header, rows = table_rows(records)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def format_markdown(records: list[dict], *, title: str | None = None) -> str:
    header, rows = table_rows(records)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", totals_line(records)]
    return "\n".join(lines) + "\n"


def accuracy(records: list[dict]) -> float | None:
    scored = [r for r in records if r["verdict"] != SKIP]
    if not scored:
        return None
    return sum(map(trial_score, scored)) / len(scored)


def totals_line(records: list[dict]) -> str:
    counts = {v: sum(r["verdict"] == v for r in records) for v in (PASS, FAIL, NULL, SKIP, ERROR)}
    parts = [f"{counts[v]} {v}" for v in (PASS, FAIL, NULL, SKIP, ERROR) if counts[v] or v in (PASS, FAIL)]
    acc = accuracy(records)
    total_s = sum(map(_trial_seconds, records))
    acc_text = f"{acc:.0%}" if acc is not None else "-"
    return (f"Total: {len(records)} trials, {', '.join(parts)}; accuracy {acc_text}; "
            f"{fmt_seconds(total_s)}")


def cut_answers_line(records: list[dict]) -> str | None:
    """A warning when trials that did not pass stopped at --max-tokens (finish "length"): their
    verdict may measure the cut answer, not retrieval."""
    cut = [r for r in records if r.get("finish") == "length" and r.get("verdict") in (FAIL, NULL)]
    if not cut:
        return None
    most = max(int(r.get("generated_tokens") or 0) for r in cut)
    return (f"warning: {len(cut)} trial(s) that did not pass stopped at the answer limit "
            f"({most} tokens) before the answer ended: their verdict may reflect the cut, not "
            "retrieval; rerun with a larger --max-tokens")


def effective_context(records: list[dict], *, threshold: float = 0.85) -> int | None:
    """Longest context whose accuracy stays >= threshold x the shortest context's accuracy.

    Contexts are walked in increasing order and the walk stops at the first that falls below.
    """
    by_ctx: dict[int, list[dict]] = {}
    for r in records:
        by_ctx.setdefault(r["context"], []).append(r)
    ctxs = sorted(by_ctx)
    if not ctxs:
        return None
    base = accuracy(by_ctx[ctxs[0]])
    if not base:
        return None
    best = None
    for c in ctxs:
        acc = accuracy(by_ctx[c])
        if acc is None or acc < threshold * base:
            break
        best = c
    return best


def attention_flops(r: dict) -> float:
    """Attention FLOPs of a trial's prefill (causal, computed tokens over the whole cache)."""
    heads, d = r.get("n_heads") or 0, r.get("head_dim") or 0
    layers = r.get("n_layers") or 0
    total = r.get("context_tokens") or r.get("context") or 0
    computed = r.get("prefilled_tokens") or total
    reused = total - computed
    # sum over computed query rows of the keys they see: rows reused..total
    pairs = (total * (total + 1) - reused * (reused + 1)) / 2
    return 4.0 * layers * heads * d * pairs


def _peaks(device: str) -> tuple[float, float]:
    dev = (device or "").lower()
    for key, peaks in DEVICE_PEAKS.items():
        if key in dev:
            return peaks
    return DEFAULT_PEAK


def suspect(r: dict) -> str | None:
    """Reason a trial's timing is physically impossible, or None."""
    if r.get("verdict") in (SKIP, ERROR) or not r.get("prefill_s"):
        return None
    flop_peak, bw_peak = _peaks(r.get("device", ""))
    flops = attention_flops(r)
    achieved = flops / max(r["prefill_s"], 1e-12)
    if achieved > flop_peak:
        return (f"prefill at {achieved / 1e12:.0f} TFLOP/s of attention alone is above the "
                f"device peak of {flop_peak / 1e12:.0f}")
    kv_bytes = 2 * (r.get("n_layers") or 0) * (r.get("n_kv_heads") or 0) * (r.get("head_dim") or 0) \
        * (r.get("context_tokens") or 0) * 2
    if r.get("decode_s") and r.get("generated_tokens", 0) > 1:
        per_token = r["decode_s"] / (r["generated_tokens"] - 1)
        bw = kv_bytes / max(per_token, 1e-12)
        if bw > bw_peak:
            return (f"decode reads the KV cache at {bw / 1e12:.1f} TB/s, above the device peak "
                    f"of {bw_peak / 1e12:.1f}")
    return None


EXPORT_COLUMNS_FIRST = ["model", "context", "context_tokens", "depth", "needle_index",
                        "needle_depth", "sample", "value", "response", "verdict", "score",
                        "task", "prefill_s",
                        "prefill_tps", "ttft_s", "decode_tps", "peak_memory_bytes", "sdpa_route"]


def to_frame(records: list[dict]):
    import pandas as pd

    df = pd.DataFrame(records)
    first = [c for c in EXPORT_COLUMNS_FIRST if c in df.columns]
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest]
    df["suspect"] = [suspect(r) for r in records]
    if "needles" in df.columns:  # one JSON text per trial (CSV and Parquet keep it as text)
        df["needles"] = [json.dumps(v) if isinstance(v, list) else None for v in df["needles"]]
    return df


def _writable(path: str | Path) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise NiahError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist; create it first")
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise NiahError(f"cannot write {str(path)!r} ({exc.strerror}): choose a writable path") from None
    return path


def export(records: list[dict], *, csv=None, json_path=None, parquet=None) -> None:
    df = to_frame(records)
    try:
        if csv:
            df.to_csv(_writable(csv), index=False)
        if json_path:
            _writable(json_path).write_text(json.dumps(df.to_dict(orient="records"), indent=1,
                                                       default=str))
        if parquet:
            df.to_parquet(_writable(parquet), index=False)
    except ImportError:
        raise NiahError("Parquet export needs pyarrow: pip install pyarrow") from None
    except OSError as exc:  # a disk that fills while writing
        raise NiahError(f"cannot write the export ({exc.strerror or exc}): free space or choose "
                        "another path") from None


def heatmap(records: list[dict], path, *, title: str | None = None) -> None:
    """A PNG: contexts (rows) x depths (columns), colour = accuracy, cells annotated."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError:
        raise NiahError("heatmaps need matplotlib: pip install matplotlib") from None
    import numpy as np

    cs = cells(records)
    rows = sorted({(c.context, c.label) for c in cs})
    depths = sorted({c.depth for c in cs})
    grid = np.full((len(rows), len(depths)), np.nan)
    text = [["" for _ in depths] for _ in rows]
    for c in cs:
        i, j = rows.index((c.context, c.label)), depths.index(c.depth)
        if c.n:
            grid[i, j] = c.passed / c.n
            text[i][j] = f"{_num(c.passed)}/{c.n}" if c.n > 1 or 0 < c.passed < 1 else c.verdicts[0]
        else:
            text[i][j] = "SKIP"
    cmap = LinearSegmentedColormap.from_list("niah", ["#d7301f", "#fdcc8a", "#1a9850"])
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(depths) + 2), max(2.5, 0.6 * len(rows) + 1.5)))
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{d * 100:.4g}%" for d in depths])
    ax.set_yticks(range(len(rows)), [format_context(c) + (f" {l}" if l else "") for c, l in rows])
    ax.set_xlabel("needle depth")
    ax.set_ylabel("context (tokens)")
    for i in range(len(rows)):
        for j in range(len(depths)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title or "Needle retrieval")
    fig.tight_layout()
    fig.savefig(_writable(path), dpi=120)
    plt.close(fig)


def junit(records: list[dict], path, *, name: str = "niah") -> None:
    """JUnit XML: one testcase per trial; FAIL/NULL/ERROR carry the response."""
    import xml.etree.ElementTree as ET

    failures = sum(r["verdict"] in (FAIL, NULL) for r in records)
    errors = sum(r["verdict"] == ERROR for r in records)
    skipped = sum(r["verdict"] == SKIP for r in records)
    total_s = sum(map(_trial_seconds, records))
    suite = ET.Element("testsuite", name=name, tests=str(len(records)), failures=str(failures),
                       errors=str(errors), skipped=str(skipped), time=f"{total_s:.3f}")
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.{r['model']}",
                             name=f"context={r['context']} depth={r['depth']:g} sample={r['sample']}",
                             time=f"{_trial_seconds(r):.3f}")
        if r["verdict"] in (FAIL, NULL):
            el = ET.SubElement(case, "failure", message=f"{r['verdict']}: expected {r['value']}",
                               type=r["verdict"])
            el.text = r.get("response") or ""
        elif r["verdict"] == ERROR:
            el = ET.SubElement(case, "error", message=r.get("error") or "error")
        elif r["verdict"] == SKIP:
            ET.SubElement(case, "skipped", message=r.get("error") or "skipped")
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.ElementTree(suites).write(_writable(path), encoding="utf-8", xml_declaration=True)


def compare(runs: list[tuple[str, list[dict]]]) -> str:
    """Per-cell comparison of runs (first is the baseline): accuracy, delta, verdict changes."""
    keyed = []
    for name, recs in runs:
        keyed.append((name, {(c.context, c.label, c.depth): c for c in cells(recs)}))
    all_keys = sorted(set().union(*(set(k) for _, k in keyed)))
    header = ["Context", "Depth"] + [name for name, _ in keyed] + \
        [f"Δ {name}" for name, _ in keyed[1:]] + ["Changed"]
    rows = []
    changed = missing = 0
    for key in all_keys:
        ctx, label, depth = key
        accs, verds = [], []
        for _, k in keyed:
            c = k.get(key)
            accs.append(None if c is None or c.n == 0 else c.passed / c.n)
            verds.append("-" if c is None else ("/".join(c.verdicts) if len(c.verdicts) <= 2 else f"{_num(c.passed)}/{c.n}"))
        deltas = ["-" if a is None or accs[0] is None else f"{(a - accs[0]) * 100:+.0f}%" for a in accs[1:]]
        status = _compare_status([(name, k.get(key)) for name, k in keyed], verds)
        changed += status == "yes"
        missing += status.startswith("missing")
        rows.append([format_context(ctx) + (f" {label}" if label else ""), f"{depth * 100:.4g}%",
                     *verds, *deltas, status])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    summary = [f"{name}: accuracy {acc:.0%}" if (acc := accuracy(recs)) is not None else f"{name}: -"
               for name, recs in runs]
    lines.append("")
    lines.append("; ".join(summary) + f"; {changed} cell(s) changed verdict" +
                 (f"; {missing} cell(s) missing from a run" if missing else ""))
    return "\n".join(lines)


def _compare_status(cells_by_run: list[tuple[str, "Cell | None"]], verdicts: list[str]) -> str:
    """'missing in the baseline' / 'missing in NAME' when a run lacks the cell (not a change
    of verdict), 'yes' when the verdicts differ, '' otherwise."""
    if cells_by_run[0][1] is None:
        return "missing in the baseline"
    absent = [name for name, c in cells_by_run[1:] if c is None]
    if absent:
        return "missing in " + ", ".join(absent)
    return "yes" if len(set(verdicts)) > 1 else ""
