"""The weight cache: converted GGUF tensors kept on disk, so a file is converted only once.

An entry is a folder weights/<key>/ in the user's cache folder (niah.user_cache) holding
weights.safetensors (the converted tensors, by GGUF name) and manifest.json (the key, what the
entry came from, the per-tensor quantization and each file's size and sha256). The key is a
digest of everything that decides the converted values (see niah.gguf.read.cache_key): the
same key always means the same arrays as a fresh conversion.

Writing: into a fresh temporary folder beside the entries, data first (flushed to disk), the
manifest last, then one rename onto the entry's name. A rename onto an existing entry fails,
so of two processes converting the same file at once one entry wins and the other's folder is
dropped; a reader never sees half an entry. A write that fails (a full disk) removes its
temporary folder; folders left by killed processes are removed by the next store
(`_remove_stale_temps`). Reading: the manifest must parse and name this key, every file must
have the manifest's size and whole-file sha256 (never identity's sampled fingerprint of files
over 2 GiB; niah.digest_store: hashed once per file, not at every load), and mx.load must
return the tensors listed. Anything else (missing or truncated file, damaged manifest) counts
as corrupt: the entry is moved aside, deleted and rebuilt by the caller, never used; an entry
that is a link is unlinked, never followed. NIAH_WEIGHT_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..identity import full_file_digest, remember_full_digest
from ..user_cache import WEIGHTS, cache_root, enabled

FORMAT = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST = "manifest.json"
STALE_TEMP_S = 6 * 3600  # temporary folders older than this were left by killed writers


@dataclass
class Entry:
    """What an entry holds: tensors by GGUF name and name -> (group_size, bits)."""

    tensors: dict
    quantized: dict = field(default_factory=dict)


def weights_dir() -> Path:
    return cache_root() / WEIGHTS


def cache_enabled() -> bool:
    return enabled("NIAH_WEIGHT_CACHE")


def _delete(path: Path) -> None:
    """Delete a folder of niah's; a link put in its place is unlinked (never followed)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Remove an entry atomically: renamed aside first, so no reader sees it half-deleted."""
    trash = folder.parent / f".trash-{secrets.token_hex(6)}"
    try:
        os.rename(folder, trash)
    except OSError:
        return  # another process removed or replaced it first
    _delete(trash)


def _read_manifest(folder: Path, key: str) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("key") != key
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        return None
    return manifest


def _files_intact(folder: Path, files: dict) -> bool:
    for name, want in files.items():
        path = folder / name
        try:
            if os.stat(path).st_size != want["size"] or full_file_digest(path) != want["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return WEIGHTS_FILE in files


def _load(folder: Path, manifest: dict) -> Entry | None:
    import mlx.core as mx

    try:
        tensors = mx.load(str(folder / WEIGHTS_FILE))
    except Exception:  # noqa: BLE001 - mlx raises plain exceptions for damaged files
        return None
    if sorted(tensors) != sorted(manifest.get("tensors", [])):
        return None
    quantized = {k: tuple(v) for k, v in manifest.get("quantized", {}).items()}
    return Entry(tensors=tensors, quantized=quantized)


def lookup(key: str) -> tuple[Entry | None, str]:
    """(entry, "hit") when an intact entry exists; (None, "miss") when none does; (None,
    "corrupt") when one existed but failed a check and was removed."""
    folder = weights_dir() / key
    try:
        os.stat(folder)
    except OSError:  # none, or a cache folder the system refuses (the store then says so)
        return None, "miss"
    manifest = _read_manifest(folder, key)
    entry = None
    if manifest is not None and _files_intact(folder, manifest["files"]):
        entry = _load(folder, manifest)
    if entry is None:
        _discard(folder)
        return None, "corrupt"
    return entry, "hit"


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 * 1024**2), b""):
            h.update(block)
    return h.hexdigest()


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(root: Path) -> None:
    """Delete what killed processes left: .trash- folders (entries renamed aside to be
    deleted: no one reads them, so at any age) and .tmp- folders older than STALE_TEMP_S
    (a younger one may be another process's write in progress)."""
    for old in root.glob(".trash-*"):
        _delete(old)
    now = time.time()
    for old in root.glob(".tmp-*"):
        try:
            if now - old.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def _write_entry(tmp: Path, key: str, entry: Entry, source: dict) -> dict:
    """Data, then manifest, into `tmp`; returns the files' {name: {size, sha256}}."""
    import mlx.core as mx

    data = tmp / WEIGHTS_FILE
    mx.save_safetensors(str(data), entry.tensors, metadata={"niah_weight_cache": key})
    _fsync(data)
    files = {WEIGHTS_FILE: {"size": data.stat().st_size, "sha256": _sha256(data)}}
    manifest = {
        "format": FORMAT,
        "key": key,
        "source": source,
        "files": files,
        "tensors": sorted(entry.tensors),
        "quantized": {k: list(v) for k, v in entry.quantized.items()},
    }
    _write_durably(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return files


def store(key: str, entry: Entry, *, source: dict) -> str:
    """Write `entry` under `key`: "stored", "lost" (another process stored it first: its
    entry is kept, ours dropped) or "unwritable" (no space, no permission: the run goes on
    without the cache). `source` is recorded in the manifest for people reading it."""
    root = weights_dir()
    tmp = root / f".tmp-{key[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root)
        tmp.mkdir()
        files = _write_entry(tmp, key, entry, source)
        try:
            os.rename(tmp, root / key)
        except OSError:
            if (root / key).exists():
                return "lost"
            raise
    except (OSError, RuntimeError):  # mlx reports write failures as RuntimeError
        return "unwritable"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # renamed away, or never made: nothing to do
    for name, want in files.items():
        try:
            remember_full_digest(root / key / name, want["sha256"])
        except OSError:
            pass  # removed meanwhile (`niah cache clear`): the next lookup hashes it
    return "stored"
