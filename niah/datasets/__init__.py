"""niah's data files (package data): task templates, key vocabularies, shippable haystacks.

See README.md in this folder. `DATASETS` is the folder; `haystack_path` resolves a haystack
name (``zh``, ``ja``, ``log``) to its file.
"""

from __future__ import annotations

from pathlib import Path

DATASETS = Path(__file__).resolve().parent
HAYSTACKS = DATASETS / "haystacks"


def haystack_names() -> list[str]:
    """Names of the shipped haystack texts."""
    return sorted(p.stem for p in HAYSTACKS.glob("*.txt"))


def haystack_path(name: str) -> Path | None:
    """The file of a shipped haystack, or None."""
    path = HAYSTACKS / f"{name}.txt"
    return path if name in haystack_names() else None
