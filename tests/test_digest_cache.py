"""The file-digest store (niah.digest_store behind niah.identity.file_digest): an unchanged
file is not hashed again, a changed one always is. Hashes are counted by wrapping
identity._hash_file; the store lives in tmp_path."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from niah import digest_store, identity


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Cache folder in tmp, the racy-write window off (files here are seconds old), and a
    list that grows by one path per real hash."""
    monkeypatch.setenv("NIAH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NIAH_DIGEST_CACHE", raising=False)
    monkeypatch.setattr(digest_store, "RACY_S", 0.0)
    hashed = []
    real = identity._hash_file

    def counting(path, size):
        hashed.append(path)
        return real(path, size)

    monkeypatch.setattr(identity, "_hash_file", counting)
    return hashed


def _big(path: Path, fill: bytes = b"a") -> Path:
    path.write_bytes(fill * (2 * digest_store.MIN_BYTES))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unchanged_file_is_hashed_once(tmp_path, store):
    f = _big(tmp_path / "model.bin")
    assert identity.file_digest(f) == _sha(f)
    assert identity.file_digest(f) == _sha(f)
    assert identity.file_digest(str(f.resolve())) == _sha(f)
    assert len(store) == 1
    assert (tmp_path / "cache" / digest_store.DB_NAME).is_file()


def test_another_process_reuses_the_digest(tmp_path, store):
    f = _big(tmp_path / "model.bin")
    identity.file_digest(f)
    code = (
        "import sys; from niah import identity, digest_store\n"
        "calls = []\n"
        "real = identity._hash_file\n"
        "identity._hash_file = lambda p, s: calls.append(p) or real(p, s)\n"
        "print(identity.file_digest(sys.argv[1]), len(calls))"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(f)], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [_sha(f), "0"]


def test_touch_rehashes_and_gives_the_same_digest(tmp_path, store):
    f = _big(tmp_path / "model.bin")
    before = identity.file_digest(f)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert identity.file_digest(f) == before
    assert len(store) == 2


def test_edit_of_the_same_size_is_rehashed(tmp_path, store):
    f = _big(tmp_path / "model.bin")
    before = identity.file_digest(f)
    with open(f, "r+b") as fh:
        fh.seek(123)
        fh.write(b"b")
    assert identity.file_digest(f) == _sha(f) != before


def test_edit_with_mtime_set_back_is_rehashed(tmp_path, store):
    """Same size, mtime restored (touch -d, cp -p, rsync -t): ctime still moves, so the
    stored digest does not match."""
    f = _big(tmp_path / "model.bin")
    st = f.stat()
    before = identity.file_digest(f)
    with open(f, "r+b") as fh:
        fh.seek(7)
        fh.write(b"z")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert identity.file_digest(f) == _sha(f) != before


def test_replaced_file_is_rehashed(tmp_path, store):
    f = _big(tmp_path / "model.bin")
    st = f.stat()
    before = identity.file_digest(f)
    new = _big(tmp_path / "new.bin", fill=b"c")
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, f)
    assert identity.file_digest(f) == _sha(f) != before


def test_recently_changed_file_is_not_stored(tmp_path, store, monkeypatch):
    monkeypatch.setattr(digest_store, "RACY_S", 3600.0)
    f = _big(tmp_path / "model.bin")
    identity.file_digest(f)
    identity.file_digest(f)
    assert len(store) == 2


def test_small_files_and_the_off_switch_always_hash(tmp_path, store, monkeypatch):
    small = tmp_path / "small.txt"
    small.write_text("x" * 100)
    identity.file_digest(small)
    identity.file_digest(small)
    assert len(store) == 2
    monkeypatch.setenv("NIAH_DIGEST_CACHE", "0")
    f = _big(tmp_path / "model.bin")
    identity.file_digest(f)
    identity.file_digest(f)
    assert len(store) == 4 and not (tmp_path / "cache").exists()


def test_damaged_store_falls_back_to_hashing(tmp_path, store):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / digest_store.DB_NAME).write_bytes(b"not a database" * 100)
    f = _big(tmp_path / "model.bin")
    assert identity.file_digest(f) == _sha(f)
    assert identity.file_digest(f) == _sha(f)
    assert len(store) == 2


def test_concurrent_processes_share_the_store(tmp_path, store):
    files = [_big(tmp_path / f"m{i}.bin", fill=bytes([97 + i])) for i in range(4)]
    time.sleep(digest_store.RACY_S_DEFAULT + 0.1)  # the children keep the racy-write rule
    code = "import sys; from niah.identity import file_digest; print(file_digest(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(f)], env=env, text=True, stdout=subprocess.PIPE
        )
        for f in files
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == [_sha(f) for f in files]
    for f in files:
        assert identity.file_digest(f) == _sha(f)
    assert store == []  # every digest came from the store the four processes wrote
