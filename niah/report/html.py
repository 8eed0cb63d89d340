"""The HTML report: one self-contained page (styles, script and data inline; nothing fetched)
with a run's identity and totals, a context x depth heatmap per task / KV setting / prefill
step, each cell's trials on click, timing and memory plots, and changes against a baseline.

Python gathers the data and writes it into the page once, as JSON; the page's script
(assets/page.js) renders it with DOM text nodes only, so untrusted text (answers,
haystack excerpts) stays text. A Content-Security-Policy allows only that script (by hash)
and no request of any kind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# What the page takes from the rest of niah, in one place.
from ..errors import NiahError
from ..scoring import VERDICTS
from ..store import latest_by_key, read_run_log, written_at
from .stats import accuracy, effective_context, trial_score, wilson
from .tables import beyond_trained, row_label

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_EFFECTIVE_THRESHOLD = 0.85
# Trial fields the page shows (others stay in trials.jsonl); absent or null ones are left out.
TRIAL_FIELDS = (
    "context",
    "context_tokens",
    "depth",
    "sample",
    "verdict",
    "value",
    "response",
    "needle_index",
    "needle_depth",
    "needle_boundary",
    "prefill_s",
    "prefill_tps",
    "decode_s",
    "decode_tps",
    "generated_tokens",
    "elapsed_s",
    "peak_memory_bytes",
    "sdpa_route",
    "prefix_reuse",
    "reused_tokens",
    "finish",
    "error",
    "beyond_trained",
    "excerpt",
)
NEEDLE_FIELDS = (
    "role",
    "key",
    "value",
    "needle_index",
    "needle_depth",
    "boundary",
    "found",
    "excerpt",
)


def write_html(
    path,
    runs: Sequence[tuple],
    *,
    compare: bool = False,
    effective_threshold: float = DEFAULT_EFFECTIVE_THRESHOLD,
) -> Path:
    """Write the page for `runs`, a list of (run folder, records) pairs. Without `compare` the
    folders hold one experiment and their records are pooled (a trial key counted once, its
    latest record kept); with it each run is shown on its own and cells whose verdicts differ
    from the first run's (the baseline) are marked and listed."""
    if not runs:
        raise NiahError("the HTML report needs at least one run folder with trials")
    if compare:
        shown = [_run_data(folder, recs, threshold=effective_threshold) for folder, recs in runs]
        changes = _changes(shown)
    else:
        pooled = list(
            latest_by_key(sorted((r for _, recs in runs for r in recs), key=written_at)).values()
        )
        shown = [
            _run_data(
                runs[0][0],
                pooled,
                threshold=effective_threshold,
                folders=[folder for folder, _ in runs],
            )
        ]
        changes = []
    data = {"compare": bool(compare), "runs": shown, "changes": changes, "title": _title(shown)}
    return _write(Path(path), render_page(data))


def render_page(data: dict) -> str:
    """The whole document: data as JSON once, the assets inline."""
    script = (ASSETS / "page.js").read_text(encoding="utf-8")
    style = (ASSETS / "page.css").read_text(encoding="utf-8")
    policy = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_escape(data['title'])}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        "<noscript>This report draws its tables with JavaScript: open it in a browser with "
        "scripts enabled, or read the run folder's trials.jsonl.</noscript>\n"
        '<main id="app"></main>\n'
        f'<script type="application/json" id="niah-data">{script_json(data)}</script>\n'
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def script_json(data) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` (so no `</script>` or `<!--`
    can end it early) and no line separators U+2028/9."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _write(path: Path, page: str) -> Path:
    """Write the page (the export registry writes it atomically and words any failure)."""
    path.write_text(page, encoding="utf-8")
    return path


def _title(runs: list[dict]) -> str:
    models = list(dict.fromkeys(r["model"] for r in runs))
    return "niah report: " + ", ".join(models) + " (" + ", ".join(r["name"] for r in runs) + ")"


def _run_data(folder, records: list[dict], *, threshold: float, folders=None) -> dict:
    """One run's page data: identity, totals, and its trials grouped per heatmap."""
    records = [r for r in records if isinstance(r, dict)]
    folders = [Path(f) for f in (folders or [folder])]
    counts = Counter(r.get("verdict") for r in records)
    acc = accuracy(records)
    scored = [r for r in records if r.get("verdict") != "SKIP"]
    lo, hi = wilson(sum(map(trial_score, scored)), len(scored))
    trained = {r.get("trained_context") for r in records} - {None}
    return {
        "name": ", ".join(f.name for f in folders),
        "model": str(records[0].get("model")) if records else "?",
        "identity": identity(folders, records),
        "totals": {v: counts.get(v, 0) for v in VERDICTS},
        "trials": len(records),
        "accuracy": acc,
        "wilson": [lo, hi] if scored else None,
        "effective": effective_context(records, threshold=threshold) if records else None,
        "effective_threshold": threshold,
        "seconds": sum(_seconds(r) for r in records),
        "trained": min(trained) if trained else None,
        "groups": _groups(records),
    }


def _seconds(r: dict) -> float:
    if isinstance(r.get("elapsed_s"), (int, float)):
        return float(r["elapsed_s"])
    return float(r.get("ttft_s") or 0) + float(r.get("decode_s") or 0)


def _groups(records: list[dict]) -> list[dict]:
    """Trials per heatmap: one per task and per row label (KV bits, window, prefill step)."""
    show_step = len({r.get("prefill_step") for r in records}) > 1
    groups: dict[str, list[dict]] = {}
    for r in records:
        name = " ".join(
            p for p in (r.get("task") or "single", row_label(r, show_step=show_step)) if p
        )
        groups.setdefault(name, []).append(_trial(r))
    for trials in groups.values():
        trials.sort(key=lambda t: (t.get("context", 0), t.get("depth", 0), t.get("sample", 0)))
    return [{"name": name, "trials": trials} for name, trials in sorted(groups.items())]


def _trial(r: dict) -> dict:
    out = {k: r[k] for k in TRIAL_FIELDS if _shown(r.get(k))}
    out["beyond_trained"] = beyond_trained(r)  # the tables' judgement, the field or not
    out["score"] = trial_score(r) if r.get("verdict") != "SKIP" else None
    needles = r.get("needles")
    if isinstance(needles, list):
        out["needles"] = [
            {k: n[k] for k in NEEDLE_FIELDS if _shown(n.get(k))}
            for n in needles
            if isinstance(n, dict)
        ]
    return out


def _shown(value) -> bool:
    """A value the page can carry: not null, and no NaN or infinity (JSON has neither)."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def identity(folders: list[Path], records: list[dict]) -> list[list[str]]:
    """(label, text) pairs naming what ran: from config.json, runs.jsonl and the records."""
    config = _config(folders[0])
    ident = config.get("identity") if isinstance(config.get("identity"), dict) else {}
    first = records[0] if records else {}

    def seen(field):
        return ", ".join(dict.fromkeys(str(r[field]) for r in records if r.get(field) is not None))

    times = sorted(str(r["time"]) for r in records if r.get("time"))
    pairs = [
        ("Model", seen("model")),
        ("Model digest", ident.get("model_digest") or seen("model_digest")),
        ("Weights", seen("weights")),
        ("Device", seen("device")),
        (
            "Backend",
            " ".join(
                x
                for x in (ident.get("backend"), ident.get("compute_dtype") or seen("compute_dtype"))
                if x
            ),
        ),
        ("Attention route", _route(config, records)),
        ("Versions", _versions(ident, first)),
        ("Task", seen("task") or config.get("task") or "single"),
        ("Haystack", seen("haystack_digest") or str(config.get("haystack") or "")),
        ("RoPE scaling", seen("rope_scaling")),
        ("Trained context", seen("trained_context")),
        ("Date", times[0] + (f" to {times[-1]}" if times[-1] != times[0] else "") if times else ""),
        ("Command", _command(folders)),
        ("Config hash", seen("config_hash") or str(config.get("config_hash") or "")),
        ("Run folder", ", ".join(str(f) for f in folders)),
    ]
    return [[label, str(text)] for label, text in pairs if text]


def _config(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _route(config: dict, records: list[dict]) -> str:
    ran = ", ".join(sorted({str(r["sdpa_route"]) for r in records if r.get("sdpa_route")}))
    asked = config.get("sdpa")
    return f"--sdpa {asked}: ran {ran}" if asked and ran else (ran or str(asked or ""))


def _versions(ident: dict, first: dict) -> str:
    parts = [
        (name, ident.get(key) or first.get(key))
        for name, key in (
            ("MLX", "mlx_version"),
            ("mlx-lm", "mlx_lm_version"),
            ("niah", "niah_version"),
        )
    ]
    return ", ".join(f"{name} {v}" for name, v in parts if v)


def _command(folders: list[Path]) -> str:
    """The command of each run that wrote into the folders (runs.jsonl start events)."""
    commands = []
    for folder in folders:
        try:
            events = read_run_log(folder)
        except (OSError, ValueError):
            continue
        for e in events:
            argv = e.get("argv") if isinstance(e, dict) and e.get("event") == "start" else None
            if isinstance(argv, list) and argv:
                commands.append(" ".join(["niah", *map(str, argv[1:])]))
    unique = list(dict.fromkeys(commands))
    more = len(commands) - 1
    return (
        unique[0] + (f" (and {more} later run(s) into the folder)" if more > 0 else "")
        if unique
        else ""
    )


def _cell_summary(trials: list[dict]) -> tuple:
    verdicts = tuple(sorted(t["verdict"] for t in trials))
    return verdicts, round(sum(t["score"] or 0 for t in trials), 6)


def _cell_text(trials: list[dict]) -> str:
    verdicts = [t["verdict"] for t in trials]
    if len(verdicts) <= 2:
        return "/".join(verdicts)
    scored = [t for t in trials if t["verdict"] != "SKIP"]
    return f"{sum(t['score'] or 0 for t in scored):g}/{len(scored)}"


def _cells(run: dict) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for group in run["groups"]:
        for t in group["trials"]:
            out.setdefault((group["name"], t["context"], t["depth"]), []).append(t)
    return out


def _changes(runs: list[dict]) -> list[dict]:
    """Cells present in the baseline and a later run whose verdicts or scores differ."""
    base = _cells(runs[0])
    changes = []
    for index, run in enumerate(runs[1:], 1):
        for key, trials in sorted(_cells(run).items()):
            before = base.get(key)
            if before is None or _cell_summary(before) == _cell_summary(trials):
                continue
            changes.append(
                {
                    "run": index,
                    "group": key[0],
                    "context": key[1],
                    "depth": key[2],
                    "before": _cell_text(before),
                    "after": _cell_text(trials),
                    "delta": _mean_score(trials) - _mean_score(before),
                }
            )
    return changes


def _mean_score(trials: list[dict]) -> float:
    scored = [t["score"] for t in trials if t["score"] is not None]
    return sum(scored) / len(scored) if scored else 0.0
