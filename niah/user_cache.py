"""The user's cache folder: where it is, how much it holds, and clearing it.

The folder is NIAH_CACHE_DIR when set, else $XDG_CACHE_HOME/niah, else ~/.cache/niah. It holds
things niah can always rebuild: converted GGUF weights (niah.gguf.cache, under weights/) and
remembered file digests (niah.digest_store, digests.sqlite3). Deleting them is always safe; a
run then converts and hashes again. `niah cache info` / `niah cache clear` and `niah doctor`
use this module; they count and delete only the entries named in PARTS, never anything else
a mistyped NIAH_CACHE_DIR may point at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

WEIGHTS = "weights"  # niah.gguf.cache's entries
DIGESTS = "digests.sqlite3"  # niah.digest_store's database
PARTS = (WEIGHTS, DIGESTS, f"{DIGESTS}-journal", f"{DIGESTS}-wal", f"{DIGESTS}-shm")


def cache_root() -> Path:
    """The cache folder, read from the environment at each call (not created here)."""
    explicit = os.environ.get("NIAH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "niah"


def enabled(variable: str) -> bool:
    """False when the environment variable `variable` is 0/false/no/off (any case)."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


def folder_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when it does not exist); files
    vanishing while counted (another process replacing an entry) are skipped."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def cache_bytes(root: Path | None = None) -> int:
    root = root or cache_root()
    return sum(folder_bytes(root / part) for part in PARTS)


def checked_root() -> Path:
    """cache_root(), refused with one line when it names something that is not a folder."""
    from .errors import NiahError

    root = cache_root()
    if root.exists() and not root.is_dir():
        raise NiahError(
            f"the cache folder {str(root)!r} is a file, not a folder: point NIAH_CACHE_DIR at a "
            "folder (or unset it)"
        )
    return root


def describe(root: Path | None = None) -> str:
    """e.g. '/home/u/.cache/niah (1.6 GiB)': the folder and the size of niah's entries."""
    root = root or checked_root()
    size = cache_bytes(root)
    shown = f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"
    return f"{root} ({shown})"


def clear(root: Path | None = None) -> int:
    """Delete niah's entries (PARTS) in the cache folder; returns the bytes they held."""
    root = root or checked_root()
    size = cache_bytes(root)
    for part in PARTS:
        path = root / part
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
    return size
