"""Hostile pass nine: niah's on-disk state under attack (the user cache and `niah cache`, the
weight cache, the digest store, the GGUF reader, the run folder's lock and trial files).

Full disks are simulated by making os.write / open raise ENOSPC, read-only folders by making
the call raise EROFS (these tests may run as root, who writes through chmod). Every path is
under tmp_path; NIAH_CACHE_DIR points there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import invoke

gguf = pytest.importorskip("gguf")

from test_weight_cache import write_kquant_gguf  # noqa: E402

from niah import digest_store, identity  # noqa: E402
from niah.gguf import cache as weight_cache  # noqa: E402
from niah.gguf.read import read_gguf  # noqa: E402


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NIAH_CACHE_DIR", str(folder))
    monkeypatch.delenv("NIAH_WEIGHT_CACHE", raising=False)
    monkeypatch.delenv("NIAH_DIGEST_CACHE", raising=False)
    return folder


@pytest.fixture
def kquant(tmp_path):
    return write_kquant_gguf(tmp_path / "tiny-kquant.gguf")


def _entry(cache_dir: Path) -> Path:
    (entry,) = [p for p in (cache_dir / "weights").iterdir() if not p.name.startswith(".")]
    return entry


@pytest.fixture
def large_files(monkeypatch):
    """Every file counts as one over identity's full-hash limit (fingerprinted by head and
    tail, as a real > 2 GiB weight file is), and the digest store remembers small files."""
    monkeypatch.setattr(identity, "FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(identity, "SAMPLE_BYTES", 256)
    monkeypatch.setattr(digest_store, "MIN_BYTES", 0)


def test_large_entry_is_checked_by_its_full_sha256_without_a_remembered_digest(
    kquant, cache_dir, large_files, monkeypatch
):
    """An intact entry over 2 GiB was checked against identity's sampled fingerprint, which
    never equals the manifest's full sha256: with no remembered digest (NIAH_DIGEST_CACHE=0,
    digests.sqlite3 cleared) the entry was called corrupt, deleted and rebuilt every run."""
    monkeypatch.setenv("NIAH_DIGEST_CACHE", "0")
    assert read_gguf(kquant).cache == "stored"
    assert read_gguf(kquant).cache == "hit"


def test_large_entry_with_a_byte_changed_mid_file_is_rebuilt(kquant, cache_dir, large_files):
    """A byte changed outside the fingerprint's head and tail samples is still caught."""
    assert read_gguf(kquant).cache == "stored"
    data = _entry(cache_dir) / weight_cache.WEIGHTS_FILE
    with open(data, "r+b") as fh:
        fh.seek(data.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert read_gguf(kquant).cache == "rebuilt"
    assert read_gguf(kquant).cache == "hit"


def _refuse(monkeypatch, code: int, *names: str) -> None:
    """Make os.<name> raise OSError(code) for every name: a read-only or full file system."""

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else "")

    for name in names:
        monkeypatch.setattr(os, name, refused)


def test_cache_clear_on_a_read_only_folder_says_so_in_one_line(kquant, cache_dir, monkeypatch):
    """A read-only cache folder gave a traceback (the digest store's unlink) or, for weights/,
    'cleared ... freed' while every entry stayed."""
    monkeypatch.setattr(digest_store, "MIN_BYTES", 0)
    read_gguf(kquant)
    assert (cache_dir / "digests.sqlite3").is_file()
    _refuse(monkeypatch, errno.EROFS, "unlink", "rmdir", "rename", "remove")
    result = invoke(["cache", "clear"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0], result.output
    assert str(cache_dir) in lines[0] and "freed" not in result.output
    monkeypatch.undo()
    assert _entry(cache_dir).is_dir()


def test_cache_clear_deletes_only_niahs_entries_in_weights(kquant, cache_dir):
    """NIAH_CACHE_DIR pointed at a folder whose weights/ holds the user's own files: clear
    removed the whole weights/ folder, theirs included."""
    read_gguf(kquant)
    weights = cache_dir / "weights"
    (weights / "my-model.safetensors").write_bytes(b"user data")
    (weights / "checkpoints").mkdir()
    (weights / "checkpoints" / "step-100.bin").write_bytes(b"user data")
    (weights / "0123456789abcdef0123456789abcdef.txt").write_text("a user file, hex name")
    (cache_dir / "digests.sqlite3.d").mkdir()
    result = invoke(["cache", "clear"])
    assert result.exit_code == 0, result.output
    left = sorted(p.name for p in weights.iterdir())
    assert left == ["0123456789abcdef0123456789abcdef.txt", "checkpoints", "my-model.safetensors"]
    assert (weights / "checkpoints" / "step-100.bin").read_bytes() == b"user data"
    assert (cache_dir / "digests.sqlite3.d").is_dir()
    assert "(0.0 MiB)" in invoke(["cache", "info"]).output
