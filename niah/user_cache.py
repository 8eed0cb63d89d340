"""The user's cache folder: where it is, how much it holds, and clearing it.

The folder is NIAH_CACHE_DIR when set, else $XDG_CACHE_HOME/niah, else ~/.cache/niah. It holds
things niah can always rebuild: converted GGUF weights (niah.gguf.cache, under weights/) and
remembered file digests (niah.digest_store, digests.sqlite3) and the CUDA kernel families
compiled ahead (niah.kernel_fill, kernel-fill.json). Deleting them is always safe; a
run then converts and hashes again. `niah cache info` / `niah cache clear` and `niah doctor`
use this module; they count and delete only niah's own entries (`owned`: the digest store's
files, and under weights/ the entry folders, named by their 32-digit key, and niah's
temporary and trash folders), never anything else a mistyped NIAH_CACHE_DIR may point at. A
part that cannot be deleted (read-only folder) is one line naming it, after the rest went.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

WEIGHTS = "weights"  # niah.gguf.cache's entries
DIGESTS = "digests.sqlite3"  # niah.digest_store's database
DIGEST_FILES = (DIGESTS, f"{DIGESTS}-journal", f"{DIGESTS}-wal", f"{DIGESTS}-shm")
KERNEL_FILL = "kernel-fill.json"  # niah.kernel_fill's record of the CUDA kernels it compiled
# weights/ entries niah.gguf.cache writes: <key>, .tmp-<key[:16]>-<pid>-<hex>, .trash-<hex>
WEIGHT_ENTRY = re.compile(r"[0-9a-f]{32}|\.tmp-[0-9a-f]{16}-\d+-[0-9a-f]{8}|\.trash-[0-9a-f]{12}")


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


def owned(root: Path) -> list[Path]:
    """niah's own entries in the cache folder: the digest store's files (or links), the kernel
    fill's record and the weight cache's folders (not links) in weights/; nothing else."""
    parts = [root / name for name in (*DIGEST_FILES, KERNEL_FILL)]
    parts = [p for p in parts if p.is_symlink() or p.is_file()]
    try:
        listed = sorted(os.scandir(root / WEIGHTS), key=lambda e: e.name)
    except OSError:
        return parts
    for entry in listed:
        if WEIGHT_ENTRY.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            parts.append(Path(entry.path))
    return parts


def cache_bytes(root: Path | None = None) -> int:
    root = root or cache_root()
    return sum(folder_bytes(part) for part in owned(root))


def checked_root() -> Path:
    """cache_root(), refused with one line when it names something that is not a folder."""
    from .errors import NiahError

    root = cache_root()
    try:
        is_file = stat.S_ISDIR(os.stat(root).st_mode) is False
    except FileNotFoundError:
        is_file = False  # made when first written
    except OSError as exc:  # a name too long, a folder above it that may not be entered
        raise NiahError(
            f"the cache folder {str(root)!r} cannot be used ({exc.strerror or exc}): point "
            "NIAH_CACHE_DIR at a folder you can write (or unset it)"
        ) from None
    if is_file:
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


def _remove(path: Path) -> None:
    """Delete one of niah's entries; the first OSError is raised."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        os.unlink(path)


def clear(root: Path | None = None) -> int:
    """Delete niah's entries (`owned`) in the cache folder; returns the bytes they held.
    Every entry that can go goes; one that cannot is a NiahError naming it."""
    from .errors import NiahError

    root = root or checked_root()
    size, failed = cache_bytes(root), []
    for part in owned(root):
        try:
            _remove(part)
        except FileNotFoundError:
            pass  # removed meanwhile (another process's trash, a finished temp)
        except OSError as exc:
            failed.append((part, exc))
    if failed:
        part, exc = failed[0]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise NiahError(
            f"cannot delete {str(part)!r}{more} in the cache folder ({exc.strerror or exc}): "
            f"make {str(root)!r} writable and run niah cache clear again"
        )
    try:
        (root / WEIGHTS).rmdir()  # only when empty: a folder of the user's files stays
    except OSError:
        pass
    return size
