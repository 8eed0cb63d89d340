"""Where a run writes: checks, before the model loads, that --out and the report files can be
written, and the clean-up that leaves nothing behind when a run refused its input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import NiahError

_EXAMPLES = {"--junit": "niah.xml", "--csv": "niah.csv"}


def check_file_option(path: Path | None, *, option: str) -> None:
    """Refuse, before the sweep, a report path that could not be written after it."""
    if path is None:
        return
    if path.is_dir():
        example = _EXAMPLES.get(option, "niah.out")
        raise NiahError(f"{option} {str(path)!r} is a folder: give a file name like {example}")
    parent = path.parent
    if not parent.is_dir():
        raise NiahError(
            f"cannot write {option} {str(path)!r}: folder {str(parent)!r} does not exist; "
            "create it first"
        )
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise NiahError(
            f"cannot write {option} {str(path)!r} (permission denied): choose a writable path"
        )


def check_out(out: str) -> None:
    """Refuse, before the model loads, an --out that cannot hold run folders."""
    if not out.strip():
        raise NiahError("--out is empty: give a folder for run folders, like --out results")
    probe = existing_ancestor(Path(out))
    if not probe.is_dir():
        raise NiahError(
            f"cannot write to output folder {out!r} ({str(probe)!r} is a file): "
            "choose a writable --out"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise NiahError(
            f"cannot write to output folder {out!r} (permission denied): choose a writable --out"
        )


def listing(folder: Path) -> set | None:
    """The names in a folder, or None when it does not exist."""
    return set(os.listdir(folder)) if os.path.isdir(folder) else None


def existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest parent that exists."""
    while not os.path.exists(path) and path != path.parent:  # False for a name too long
        path = path.parent
    return path


def remove_unstarted(out: Path, before: set | None, *, existed: Path) -> None:
    """After a run refused its input: remove the run folders this call created that hold no
    trial, and the folders of --out it created, so bad input leaves nothing behind."""
    after = listing(out)
    if after is None:
        return
    for name in after - (before or set()):
        folder = out / name
        if folder.is_dir() and not any(folder.glob("trials*.jsonl")):
            shutil.rmtree(folder, ignore_errors=True)
    folder = out
    while folder != existed and folder != folder.parent:  # --out and parents made by this call
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            break
        folder = folder.parent
