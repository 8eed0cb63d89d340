"""Which files a haystack path stands for: the one listing that both the reader (niah.haystack)
and the run identity's digest (niah.identity) use, so the text read and the text hashed are
the same files, in the same order, by construction.

The rule (docs/method.md, Haystacks): a regular file given by path is read as it is, whatever
its name. In a folder, every ``.txt`` file (any case of the suffix) under it is read, in order
of their relative paths, except anything under a hidden name (starting with ``.``) or a
``__pycache__`` folder; a link to a regular file is read as that file, links to folders are not
followed (no loops, nothing outside the folder by accident). A ``.txt`` name that is not a
regular file (a broken link, a pipe, a device), a path that is neither a regular file nor a
folder, and a folder with no file to read are refused with one line, never opened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import NiahError

GENERATED = ("prose", "noise", "needles")  # haystacks made by niah, not read from disk
TEXT_SUFFIX = ".txt"
CACHE_FOLDERS = frozenset({"__pycache__"})
_BLOCK = 4 * 1024**2


def skipped(name: str) -> bool:
    """Whether a file or folder name inside a folder haystack is left out (hidden or cache)."""
    return name.startswith(".") or name in CACHE_FOLDERS


def _walk(root: Path) -> list[Path]:
    found, pending = [], [root]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise NiahError(
                f"cannot list haystack folder {str(folder)!r} ({exc.strerror}): check permissions"
            ) from None
        for entry in entries:
            if skipped(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.name.lower().endswith(TEXT_SUFFIX):
                _check_regular(entry)
                if entry.is_file():  # follows a link to a file
                    found.append(Path(entry.path))
    return found


def _check_regular(entry: os.DirEntry) -> None:
    """A .txt name must be a regular file (or a link to one); a link to a folder is let pass
    (not followed); anything else (a broken link, a pipe, a device) is refused, never opened."""
    if entry.is_file() or (entry.is_symlink() and entry.is_dir()):
        return
    raise NiahError(
        f"haystack file {entry.path!r} is not a regular file (a broken link, a pipe "
        "or a device): remove it or replace it by a text file"
    )


def haystack_files(path: str | Path) -> list[Path]:
    """The files a file or folder haystack is read from, in reading order (module doc)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise NiahError(
            f"haystack path {str(path)!r} does not exist: give a .txt file or a folder of them"
        )
    if not path.is_dir():
        raise NiahError(
            f"haystack path {str(path)!r} is not a regular file or a folder: give a "
            ".txt file or a folder of them"
        )
    files = _walk(path)
    if not files:
        raise NiahError(
            f"haystack folder {str(path)!r} has no .txt files (hidden files and "
            "folders and __pycache__ are not read): add some or use --haystack prose"
        )
    return sorted(files, key=lambda f: f.relative_to(path).parts)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                h.update(block)
    except OSError as exc:
        raise NiahError(
            f"cannot read haystack file {str(path)!r} ({exc.strerror}): check permissions"
        ) from None
    return h.hexdigest()


def haystack_files_digest(path: str | Path) -> str:
    """sha256 of a file haystack; for a folder, of each listed file's relative name and sha256.
    Hashed afresh every call (no memo by size or time): a haystack is read whole anyway."""
    path = Path(path)
    files = haystack_files(path)
    if path.is_file():
        return _sha256(path)
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + _sha256(f).encode() + b"\0")
    return h.hexdigest()
