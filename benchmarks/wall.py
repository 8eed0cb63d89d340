"""The time a user waits against the time niah measures: each row run in a fresh process.

For every row, `python -m niah run <args> --out <temp folder>` runs in a new process; this
prints the row's wall seconds, the sum of its trials' elapsed_s (trials.jsonl), where the rest
went (runs.jsonl's "phases" event, columns explained at COLUMNS), and wall / trials.
Rows run in the order given, so the first one pays what a first niah process on the machine
pays (docs/sdpa.md: what MLX keeps across processes).

    python benchmarks/wall.py                      # the rows of issue 22 (embedded SmolLM2)
    python benchmarks/wall.py --model Q.gguf       # plus the Qwen2.5-Coder rows
    python benchmarks/wall.py --quick              # CPU: SmolLM2 at 256 and 512 tokens
    python benchmarks/wall.py --row "label::--context 4k --depth 0.5" [--row ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_ROWS = ["smollm2 128K d0.5::--context 128k --depth 0.5"]  # the headline, as typed
MODEL_ROWS = [
    "qwen 4K/32K/128K x3::--model {model} --context 4k,32k,128k --depth 0,0.5,1",
    "qwen 128K x11::--model {model} --context 128k --depth 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
    "qwen 64K/128K chunked::--model {model} --context 64k,128k --depth 0,0.5,1 --sdpa chunked",
]
QUICK_ROWS = [
    "smollm2 256::--context 256 --depth 0.5 --max-tokens 12",
    "smollm2 512::--context 512 --depth 0.5 --max-tokens 12",
]
COLUMNS = (
    "row",
    "wall_s",
    "trials_s",
    "startup",
    "imports",
    "load",
    "probe",
    "warm_up",
    "loop",
    "other",
    "wall/trials",
    "trials",
    "rc",
)
# Where the wall time went (niah/run/phases.py; runs.jsonl's "phases" event): startup = niah's
# imports and the CLI before the sweep; imports = mlx-lm, transformers (and torch where it is
# installed); load = the model; probe = timing the device for estimates; warm_up; loop = the
# trial loop minus the trials' own seconds (prompts, scoring, records); other = the rest of the
# process (interpreter start, metadata, prepare, the report and exports, exit).


@dataclass
class Row:
    label: str
    args: list[str]


@dataclass
class Result:
    label: str
    wall_s: float
    trials_s: float | None
    phases: dict[str, float]
    trials: int
    rc: int
    device: str = ""

    def other(self) -> float:
        """The wall time no shown column holds (metadata and prepare included)."""
        shown = ("startup", "imports", "load", "probe", "warm-up", "trials")
        return self.wall_s - sum(self.phases.get(k, 0.0) for k in shown)

    def cells(self) -> list[str]:
        ratio = f"{self.wall_s / self.trials_s:.2f}" if self.trials_s else "-"
        p = self.phases
        loop = p["trials"] - (self.trials_s or 0.0) if "trials" in p else None
        return [
            self.label,
            f"{self.wall_s:.1f}",
            _num(self.trials_s),
            *(_num(p.get(k)) for k in ("startup", "imports", "load", "probe", "warm-up")),
            _num(loop),
            _num(self.other() if p else None),
            ratio,
            str(self.trials),
            str(self.rc),
        ]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def parse_row(text: str, *, model: str | None = None) -> Row:
    """'label::niah run args' ({model} replaced by --model)."""
    label, sep, args = text.partition("::")
    if not sep or not label.strip():
        raise SystemExit(f"--row {text!r}: write it as 'label::niah run arguments'")
    if "{model}" in args and not model:
        raise SystemExit(f"--row {label!r} needs --model PATH")
    return Row(label=label.strip(), args=shlex.split(args.replace("{model}", model or "")))


def read_phases(folder: Path) -> dict[str, float]:
    """The "phases" event(s) of every runs.jsonl under `folder`, summed per phase."""
    total: dict[str, float] = {}
    for path in folder.rglob("runs.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry.get("event") == "phases":
                for name, seconds in entry["seconds"].items():
                    total[name] = total.get(name, 0.0) + seconds
    return total


def read_run(folder: Path) -> tuple[float | None, int, str]:
    """(sum of elapsed_s, trials, device) of every trials.jsonl under `folder`."""
    total, n, device = 0.0, 0, ""
    for path in folder.rglob("trials*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            total += record.get("elapsed_s") or 0.0
            n += 1
            device = device or record.get("device", "")
    return (round(total, 3) if n else None), n, device


def run_row(row: Row, *, python: str) -> Result:
    """One row in a fresh process, its run folder in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="niah-wall-") as tmp:
        cmd = [python, "-m", "niah", "run", *row.args, "--out", tmp, "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.stderr.write(f"{row.label}: exit {proc.returncode}\n{proc.stderr[-2000:]}\n")
        trials_s, n, device = read_run(Path(tmp))
        return Result(
            label=row.label,
            wall_s=wall,
            trials_s=trials_s,
            phases=read_phases(Path(tmp)),
            trials=n,
            rc=proc.returncode,
            device=device,
        )


def _commit() -> str:
    if os.environ.get("NIAH_COMMIT"):  # set where the tree has no .git (the GPU host)
        return os.environ["NIAH_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def print_table(results: list[Result]) -> None:
    rows = [list(COLUMNS)] + [r.cells() for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--row",
        action="append",
        default=[],
        help="'label::niah run arguments' (repeatable; replaces the default rows)",
    )
    ap.add_argument("--model", help="a model for the Qwen rows (e.g. the Q4_K_M GGUF)")
    ap.add_argument("--quick", action="store_true", help="CPU rows: SmolLM2 at 256/512 tokens")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs niah")
    args = ap.parse_args(argv)
    texts = args.row or (
        QUICK_ROWS if args.quick else DEFAULT_ROWS + (MODEL_ROWS if args.model else [])
    )
    rows = [parse_row(t, model=args.model) for t in texts]
    print(f"# command: {' '.join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])}")
    print(f"# commit: {_commit()}")
    print(f"# date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    results = [run_row(row, python=args.python) for row in rows]
    print(f"# device: {next((r.device for r in results if r.device), 'unknown')}")
    print_table(results)
    return 0 if all(r.rc in (0, 1) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
