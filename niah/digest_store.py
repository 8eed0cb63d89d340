"""Remembered file digests, so an unchanged large file (a GGUF, a haystack) is not re-hashed.

One SQLite file in the user's cache folder (niah.user_cache: digests.sqlite3) maps a resolved
path to the digest last computed for it and the file's (size, mtime_ns, inode, ctime_ns) at
that time. A lookup whose four values all match returns the stored digest; any difference
hashes the file again and replaces the row. SQLite's own locking makes it safe for several
processes at once; any failure to read or write the store (read-only folder, damaged file,
lock held too long) falls back to hashing, never to an error. NIAH_DIGEST_CACHE=0 turns the
store off. Files under MIN_BYTES are always hashed (faster than a lookup).

What the four values can and cannot detect:
- Detected: any write through the file system (it sets mtime and ctime), `touch` (same digest
  comes back after the re-hash), replacing the file by another (new inode), an edit of the same
  size whose mtime is then set back (`touch -d`, `cp -p`, rsync -t): setting mtime sets ctime to
  now, and ctime cannot be set back by a user.
- Racy writes: a file written again within the file system's timestamp granularity after it was
  hashed would keep all four values. Digests of files whose mtime or ctime is less than
  RACY_S seconds old are therefore used but not stored; they are hashed again next time.
- Not detected: a change that leaves size, mtime, ctime and inode all equal, which needs the
  system clock set back, writing the block device underneath, or a file system that does not
  keep ctime (some network and FUSE mounts; on Windows st_ctime is the creation time). There,
  set NIAH_DIGEST_CACHE=0 or run `niah cache clear` after such edits.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .user_cache import DIGESTS, cache_root, enabled

DB_NAME = DIGESTS
MIN_BYTES = 1024**2
RACY_S = RACY_S_DEFAULT = 2.0
_TIMEOUT_S = 10.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
    "mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER, digest TEXT)"
)


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime_ns, inode, ctime_ns): what a stored digest is checked against."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _connect(root: Path) -> sqlite3.Connection:
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(root / DB_NAME), timeout=_TIMEOUT_S)
    conn.execute(_SCHEMA)
    return conn


def _lookup(root: Path, path: str, key: tuple) -> str | None:
    conn = _connect(root)
    try:
        row = conn.execute(
            "SELECT size, mtime_ns, inode, ctime_ns, digest FROM digests WHERE path = ?", (path,)
        ).fetchone()
    finally:
        conn.close()
    return row[4] if row and tuple(row[:4]) == key else None


def _store(root: Path, path: str, key: tuple, digest: str) -> None:
    conn = _connect(root)
    try:
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (path, *key, digest)
            )
    finally:
        conn.close()


def _racy(st: os.stat_result) -> bool:
    newest = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
    return time.time() - newest < RACY_S


def cached_digest(path: str, st: os.stat_result, compute: Callable[[], str]) -> str:
    """The digest of `path` (stat `st`): stored when its stat key still matches, else
    `compute()`, stored unless the file is too small, too recently changed, or the store is
    off or unusable."""
    if st.st_size < MIN_BYTES or not enabled("NIAH_DIGEST_CACHE"):
        return compute()
    root, key = cache_root(), stat_key(st)
    try:
        found = _lookup(root, path, key)
    except (sqlite3.Error, OSError):
        return compute()
    if found is not None:
        return found
    digest = compute()
    if not _racy(st):
        remember(path, digest, st=st)
    return digest


def remember(path: str, digest: str, *, st: os.stat_result | None = None) -> None:
    """Store `digest` for `path` as it is now (or as `st`), skipping the racy-write rule: for a
    file this process has just written and hashed itself. Failures are ignored."""
    if not enabled("NIAH_DIGEST_CACHE"):
        return
    try:
        st = st or os.stat(path)
        _store(cache_root(), path, stat_key(st), digest)
    except (sqlite3.Error, OSError):
        pass
