"""Regenerate (or check) the measured blocks of README.md and docs/*.md from committed artifacts.

Every measured table in the README and the docs pages sits between two markers naming its source:

    <!-- niah:report results/reference/<run folder> -->      a run folder: niah report --markdown
    <!-- niah:bench docs/bench/<file>.txt -->               a benchmark's raw output
    <!-- niah:calibration docs/bench/calibration-<x>.txt --> benchmarks/calibration.py's table,
                                                             recomputed by the current preflight
    ...generated text...
    <!-- niah:end -->

A run folder's block is its provenance (command from runs.jsonl, niah and MLX versions,
device, dates) and the table `niah report --markdown` prints; a benchmark's block is the
provenance header of its raw output (command, commit, device, date) and the Markdown table
lines it printed. Nothing between the markers is typed by hand.

    python scripts/readme_tables.py          # rewrite every page that is out of date
    python scripts/readme_tables.py --check  # exit 1 naming the pages that are out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = re.compile(
    r"(<!-- niah:(report|bench|calibration) (\S+) -->\n)(.*?)(<!-- niah:end -->)", re.S
)


def report_block(folder: Path) -> str:
    """Provenance + the Markdown table and totals of one committed run folder."""
    import warnings

    from niah import report, store

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a committed artifact must read cleanly
        records = list(store.latest_by_key(store.folder_records(folder)).values())
    if not records:
        raise SystemExit(f"{folder}: no records")
    log = store.read_run_log(folder)
    starts = [e for e in log if e.get("event") == "start" and e.get("argv")]
    commands = sorted({" ".join(["niah", *e["argv"][1:]]) for e in starts})
    devices = sorted({r.get("device", "?") for r in records})
    versions = sorted(
        {f"MLX {r.get('mlx_version')}, mlx-lm {r.get('mlx_lm_version')}" for r in records}
    )
    days = sorted({str(r.get("time", ""))[:10] for r in records})
    envs = sorted({r["mlx_env"] for r in records if r.get("mlx_env")})
    lines = [
        f"Run folder `{folder.relative_to(ROOT)}` · model `{records[0]['model']}` · "
        f"{', '.join(devices)} · {'; '.join(versions)} · "
        f"{''.join(e + ' · ' for e in envs)}"
        f"{days[0]}{' to ' + days[-1] if days[-1] != days[0] else ''}"
    ]
    lines += [f"Command: `{c}`" for c in commands] or [
        "Command: not recorded (run made before runs.jsonl existed)"
    ]
    warm = [e for e in log if e.get("event") == "warm-up"]
    if warm:
        lines.append(
            "Warm-up (kept out of the cells): " + ", ".join(f"{e['seconds']:.1f} s" for e in warm)
        )
    lines += ["", report.format_markdown(records).rstrip()]
    return "\n".join(lines) + "\n"


def bench_block(path: Path) -> str:
    """Provenance header + the Markdown table lines of a benchmark's raw output."""
    text = path.read_text()
    meta = dict(re.findall(r"^# (command|commit|device|date): (.*)$", text, re.M))
    missing = [k for k in ("command", "commit", "device", "date") if k not in meta]
    if missing:
        raise SystemExit(f"{path}: raw output lacks its {', '.join(missing)} header")
    table = [line for line in text.splitlines() if line.startswith("|")] or _text_table(text)
    # MLX_* set for the command: every NAME=VALUE at the start of an env line (a note after)
    env = dict.fromkeys(
        pair
        for line in re.findall(r"^# env: (.*)$", text, re.M)
        for pair in re.match(r"((?:[A-Z_][A-Z0-9_]*=\S*\s*)*)", line).group(1).split()
    )
    command = " ".join([*env, meta["command"]])
    head = (
        f"Raw output `{path.relative_to(ROOT)}` · `{command}` · commit "
        f"{meta['commit']} · {meta['device']} · {meta['date']}"
    )
    return "\n".join([head, "", *table]) + "\n"


_MEDIAN = re.compile(
    r"^\s*(\d+)\s+median: prefill ratio ([\d.]+), decode ratio ([\d.]+|-), tokens (\w+)", re.M
)


_CELL = re.compile(
    r"^cell ctx (\d+) kv (\w+): (\d+) trials, peak ([\d.]+)-([\d.]+) GiB, spread ([\d.]+)%"
    r"(?: \| median prefill (\d+|-) tok/s, decode ([\d.]+|-) tok/s)?",  # '-': none timed
    re.M,
)


def _text_table(text: str) -> list[str]:
    """A Markdown table from output printed as plain columns: benchmarks/peak_repeat.py's cell
    lines, benchmarks/vs_mlx_lm.py's median lines, or a header row of names (benchmarks/wall.py) and rows split by two or more spaces."""
    cells = _CELL.findall(text)  # benchmarks/peak_repeat.py
    medians = _MEDIAN.findall(text)
    if cells:
        rows = [["context", "KV bits", "trials", "lowest peak GiB", "highest peak GiB", "spread"]]
        rows += [[c, k, n, lo, hi, f"{s}%"] for c, k, n, lo, hi, s, *_ in cells]
        if all(c[6] for c in cells):  # --runs: each cell's median speeds too
            rows[0] += ["median prefill tok/s", "median decode tok/s"]
            for row, cell in zip(rows[1:], cells):
                row += [cell[6], cell[7]]
    elif medians:
        rows = [["context", "prefill tok/s niah / mlx-lm", "decode tok/s niah / mlx-lm", "tokens"]]
        rows += [list(m) for m in medians]
    else:
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
        rows = [r for r in rows if len(r) == len(rows[0])] if rows else []
    if len(rows) < 2:
        return []
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def calibration_block(path: Path) -> str:
    """benchmarks/calibration.py's table recomputed with the CURRENT preflight, for the run
    folders and --dims named on the `# command:` line of its committed output `path` (a
    change to niah.preflight makes the page stale until this block is regenerated)."""
    import importlib.util
    import shlex

    text = path.read_text()
    meta = dict(re.findall(r"^# (command|commit|device|date): (.*)$", text, re.M))
    if "command" not in meta:
        raise SystemExit(f"{path}: raw output lacks its command header")
    argv = shlex.split(meta["command"])
    argv = argv[argv.index("benchmarks/calibration.py") + 1 :]
    spec = importlib.util.spec_from_file_location(
        "calibration", ROOT / "benchmarks" / "calibration.py"
    )
    cal = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cal  # dataclasses look their module up there
    spec.loader.exec_module(cal)
    dims = cal.parse_dims(argv[argv.index("--dims") + 1]) if "--dims" in argv else {}
    folders = [
        a
        for i, a in enumerate(argv)
        if not a.startswith("--") and (i == 0 or argv[i - 1] != "--dims")
    ]
    cells = [c for f in folders for c in cal.calibrate(ROOT / f, dims=dims)]
    head = (
        f"Estimate by the current `niah.preflight` against the peaks measured in "
        f"{', '.join(f'`{f}`' for f in folders)} · {meta.get('device', '?')} · raw output "
        f"`{path.relative_to(ROOT)}`"
    )
    return "\n".join([head, "", cal.table(cells)]) + "\n"


BLOCKS = {"report": report_block, "bench": bench_block, "calibration": calibration_block}


def render(text: str) -> str:
    def one(m: re.Match) -> str:
        kind, target = m.group(2), ROOT / m.group(3)
        body = BLOCKS[kind](target)
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(one, text)


def pages() -> list[Path]:
    """The pages whose generated blocks are kept: README.md and every docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale_pages() -> list[Path]:
    """Pages whose generated blocks differ from what their artifacts render."""
    return [page for page in pages() if render(page.read_text()) != page.read_text()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = stale_pages()
    if args.check:
        for page in stale:
            print(f"{page.relative_to(ROOT)} is out of date: run python scripts/readme_tables.py")
        return 1 if stale else 0
    for page in stale:
        page.write_text(render(page.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
