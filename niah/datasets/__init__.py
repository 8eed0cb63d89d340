"""niah's data files (package data): task rows, key vocabularies, shippable haystacks.

See README.md in this folder. `DATASETS` is the folder; `task_rows` reads tasks.jsonl as plain
JSON objects (niah.tasks turns them into task specs; niah.config takes its prompt defaults from
the ``single`` row); `haystack_path` resolves a haystack name (``zh``, ``ja``, ``log``) to its
file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import NiahError

DATASETS = Path(__file__).resolve().parent
HAYSTACKS = DATASETS / "haystacks"
TASKS_FILE = DATASETS / "tasks.jsonl"
ROW_FIELDS = "task, needle, question and answer_prefix"  # the fields every task row needs


def task_rows(path: Path | None = None) -> dict[str, tuple[int, dict]]:
    """Task rows by name, each with its line number: a later line with the same ``task``
    replaces an earlier one. A line that is not a JSON object naming its task is one error."""
    path = Path(path) if path else TASKS_FILE
    rows: dict[str, tuple[int, dict]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("task"), str):
            raise NiahError(f"{path}: line {n} is not a task template: give JSON with {ROW_FIELDS}")
        rows[row["task"]] = (n, row)
    return rows


def haystack_names() -> list[str]:
    """Names of the shipped haystack texts."""
    return sorted(p.stem for p in HAYSTACKS.glob("*.txt"))


def haystack_path(name: str) -> Path | None:
    """The file of a shipped haystack, or None."""
    path = HAYSTACKS / f"{name}.txt"
    return path if name in haystack_names() else None


def character_names(path: Path | None = None) -> tuple[str, ...]:
    """The character names of --task non-literal (names.txt; `#` lines are comments)."""
    path = Path(path) if path else DATASETS / "names.txt"
    return tuple(
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
