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


FULL_DISK_WRITER = r"""
import json, resource, signal, sys, warnings
from pathlib import Path
from niah.errors import NiahError
from niah.store import TrialWriter, read_trials

folder, limit = Path(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

def rec(i):
    return {"key": f"k{i}", "context": 1024, "sample": i, "depth": 0.5, "verdict": "PASS",
            "response": "y" * 700}

out = {"written": 0}
writer = TrialWriter(folder)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # the disk is full from here
try:
    for i in range(100):
        writer.write(rec(i))
        out["written"] += 1
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
try:
    writer.close()
except BaseException as exc:
    out["close"] = f"{type(exc).__name__}: {exc}"
out["tail"] = (folder / "trials.jsonl").read_bytes()[-1:].decode()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed: resume appends
with TrialWriter(folder) as writer:
    writer.write(rec(999))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["keys"] = [r["key"] for r in read_trials(folder)]
out["warnings"] = [str(w.message) for w in caught]
print(json.dumps(out))
"""


def test_a_full_disk_while_appending_a_trial_is_one_line_and_keeps_every_trial(tmp_path):
    """The disk filling up mid-record (a short write, then an error: here the file-size
    limit, as a full disk does) gave a traceback, raised again on close, and left half a
    line in trials.jsonl. Now: one line, the file cut back to its last whole record, and a
    later append (--resume) adds after it with nothing skipped."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "run"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(folder), str(8 * 1024)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert 0 < out["written"] < 100
    assert out["error"].startswith("NiahError: cannot write ")
    assert "trials.jsonl" in out["error"] and "--resume" in out["error"]
    assert "close" not in out and out["tail"] == "\n"
    written = [f"k{i}" for i in range(out["written"])]
    assert out["keys"] == written + ["k999"] and out["warnings"] == []


def test_half_a_line_left_by_a_killed_writer_is_ended_before_the_next_record(tmp_path):
    """SIGKILL mid-write leaves half a record: the next append starts on a line of its own
    (the half line is skipped with a warning, the new record kept)."""
    from niah.store import TrialWriter, append_run_log, read_run_log, read_trials

    (tmp_path / "trials.jsonl").write_text('{"key": "k0", "context": 1024, "sam')
    (tmp_path / "runs.jsonl").write_text('{"event": "sta')
    rec = {"key": "k1", "context": 1024, "sample": 0, "depth": 0.5, "verdict": "PASS"}
    with TrialWriter(tmp_path) as writer:
        writer.write(rec)
    append_run_log(tmp_path, {"event": "start"})
    with pytest.warns(UserWarning, match="skipped 1 corrupt line"):
        assert [r["key"] for r in read_trials(tmp_path)] == ["k1"]
    assert [e["event"] for e in read_run_log(tmp_path)] == ["start"]


def _no_entries(cache_dir: Path) -> bool:
    weights = cache_dir / "weights"
    return not weights.is_dir() or not [p for p in weights.iterdir()]


def test_gguf_rewritten_while_converted_is_refused_and_not_cached(kquant, cache_dir):
    """A file rewritten in place while its tensors were read gave tensors of both versions,
    stored in the weight cache under the first version's digest."""
    import time

    from niah.errors import NiahError

    def rewrite_once(done, total, what):
        if done == 1:
            time.sleep(0.05)  # past the file system's timestamp granularity
            write_kquant_gguf(kquant, seed=1)  # same layout and size, other weights

    with pytest.raises(NiahError, match="changed while niah read it"):
        read_gguf(kquant, on_progress=rewrite_once)
    assert _no_entries(cache_dir)
    assert read_gguf(kquant).cache == "stored"  # the file as it is now reads fine


def test_gguf_replaced_between_digest_and_load_is_refused(tmp_path, cache_dir, monkeypatch):
    """A native file (read by mx.load) replaced after its digest was taken: the run would be
    identified by one file and measure another."""
    from niah.errors import NiahError
    from niah.gguf import read as gguf_read

    native = write_kquant_gguf(tmp_path / "native.gguf", types=("Q8_0",))
    other = write_kquant_gguf(tmp_path / "other.gguf", types=("Q8_0",), seed=1)
    digest = gguf_read.file_digest

    def digest_then_replace(path):
        value = digest(path)
        os.replace(other, native)
        return value

    monkeypatch.setattr(gguf_read, "file_digest", digest_then_replace)
    with pytest.raises(NiahError, match="changed while niah read it"):
        read_gguf(native)


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EROFS, errno.EACCES, errno.EIO])
def test_a_lock_that_fails_for_another_reason_does_not_blame_another_run(
    tmp_path, monkeypatch, code
):
    """flock failing for any reason was reported as 'another niah run (...) is writing to'
    the folder, with no other run anywhere: the user waits for nothing."""
    import fcntl

    from niah.errors import NiahError
    from niah.store import FolderLock

    def refused(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)
    with pytest.raises(NiahError) as caught:
        with FolderLock(tmp_path / "run"):
            pass
    message = str(caught.value)
    assert "another" not in message and os.strerror(code) in message, message
    assert str(tmp_path / "run") in message


def test_a_lock_held_by_another_process_names_it(tmp_path):
    """The one case that blames another run: the lock really is held (here by a child)."""
    import subprocess
    import sys

    from niah.errors import NiahError
    from niah.store import FolderLock

    folder = tmp_path / "run"
    hold = (
        "import sys, time; from niah.store import FolderLock\n"
        "with FolderLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(NiahError, match=rf"another niah run \(pid {child.pid} on "):
            with FolderLock(folder):
                pass
    finally:
        child.kill()
        child.wait()
    with FolderLock(folder):  # a killed holder leaves no stale lock
        pass


PREPARE_ON_FULL_DISK = r"""
import resource, signal, sys
from niah.config import RunConfig
from niah.errors import NiahError
from niah.store import prepare_folder

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    prepare_folder(sys.argv[1], RunConfig(model="default"))
except NiahError as exc:
    print(exc)
"""


@pytest.mark.parametrize("limit", [1, 200])  # the write probe fails; then config.json's temp
def test_a_run_folder_on_a_full_disk_keeps_no_temporary_files(tmp_path, limit):
    """prepare_folder's write probe (.write-test-<pid>) and config.json's temporary copy
    stayed in the run folder when the disk was full, one more per attempt."""
    import subprocess
    import sys

    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", PREPARE_ON_FULL_DISK, str(folder), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cannot write to output folder"), done.stdout
    assert sorted(p.name for p in folder.iterdir()) == []


def test_weight_cache_temporaries_of_a_failed_or_killed_write_do_not_accumulate(
    kquant, cache_dir, monkeypatch
):
    """A write that fails (full disk) removes its temporary folder; a .trash- folder left by a
    process killed while deleting a corrupt entry (a whole entry's size) is removed by the
    next store, whatever its age; a fresh .tmp- folder (another process writing) is kept."""
    import mlx.core as mx

    save = mx.save_safetensors

    def save_then_fail(path, *args, **kwargs):
        save(path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise RuntimeError("[save_safetensors] No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", save_then_fail)
    assert read_gguf(kquant).cache == "unwritable"
    assert _no_entries(cache_dir)
    monkeypatch.setattr(mx, "save_safetensors", save)
    weights = cache_dir / "weights"
    (weights / ".trash-0123456789ab").mkdir()
    (weights / ".trash-0123456789ab" / "weights.safetensors").write_bytes(b"x" * 4096)
    busy = weights / f".tmp-{'a' * 16}-{os.getpid()}-01234567"
    busy.mkdir()
    assert read_gguf(kquant, quant="q4").cache == "stored"
    assert sorted(p.name for p in weights.iterdir() if p.name.startswith(".")) == [busy.name]


def test_an_entry_replaced_by_a_link_is_unlinked_never_followed(kquant, cache_dir, tmp_path):
    """An entry that is a link to the user's folder fails its check: the link goes (it stayed
    as a .trash- link for ever), the folder it points at and its files stay."""
    import shutil

    read_gguf(kquant)
    entry = _entry(cache_dir)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "precious.txt").write_text("mine")
    shutil.rmtree(entry)
    entry.symlink_to(theirs)
    assert read_gguf(kquant).cache == "rebuilt"
    assert (theirs / "precious.txt").read_text() == "mine"
    assert [p.name for p in (cache_dir / "weights").iterdir()] == [entry.name]
    assert not entry.is_symlink()


CUT_WHILE_CONVERTED = r"""
import sys
from pathlib import Path
from test_weight_cache import write_kquant_gguf
from niah.errors import NiahError
from niah.gguf.read import read_gguf

path = write_kquant_gguf(Path(sys.argv[1]))

def cut(done, total, what):  # a download or copy starting over the file
    if done == 1:
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 3)

try:
    read_gguf(path, quant="q8", on_progress=cut)
except NiahError as exc:
    print(exc)
"""


def test_gguf_cut_short_while_converted_is_one_line_not_a_bus_error(tmp_path, cache_dir):
    """The tensors were read through a memory map: a file truncated meanwhile killed the
    process with SIGBUS ('Bus error', no message, exit 135)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", CUT_WHILE_CONVERTED, str(tmp_path / "cut.gguf")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "changed while niah read it" in done.stdout
    assert _no_entries(cache_dir)


def test_large_gguf_changed_mid_file_gets_a_new_entry_not_the_old_conversion(
    kquant, cache_dir, large_files
):
    """Over 2 GiB the GGUF's digest is a fingerprint of its size, head and tail: a tensor
    changed in between (same size) kept the weight cache key, and the old file's converted
    tensors were returned as this file's."""
    import mlx.core as mx

    first = read_gguf(kquant)
    size = kquant.stat().st_size
    with open(kquant, "r+b") as fh:  # inside a tensor's blocks, far from head and tail
        fh.seek(size // 2)
        chunk = bytearray(fh.read(64))
        fh.seek(size // 2)
        fh.write(bytes(b ^ 0x11 for b in chunk))
    second = read_gguf(kquant)
    assert second.cache == "stored"
    changed = [n for n in first.tensors if not mx.array_equal(first.tensors[n], second.tensors[n])]
    assert changed


def test_a_large_entry_is_hashed_once_when_written_not_again_at_each_load(
    kquant, cache_dir, large_files, monkeypatch
):
    """The whole sha256 computed while storing an entry is what the next load's check finds."""
    assert read_gguf(kquant).cache == "stored"
    hashed = []
    whole = identity._hash_file
    monkeypatch.setattr(identity, "_hash_file", lambda *a, **k: hashed.append(a) or whole(*a, **k))
    assert read_gguf(kquant).cache == "hit"
    assert [a for a in hashed if "weights" in a[0]] == []


@pytest.mark.parametrize("name", [".lock", ".lock.rank1"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, name):
    """A run folder received from elsewhere (a tarball) whose .lock is a link: taking the lock
    truncated the file it points at and wrote 'pid N on host' into it."""
    from niah.errors import NiahError
    from niah.store import FolderLock

    folder = tmp_path / "run"
    folder.mkdir()
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file")
    (folder / name).symlink_to(victim)
    with pytest.raises(NiahError, match="is a link") as caught:
        with FolderLock(folder, rank=1 if "rank" in name else None):
            pass
    assert "another" not in str(caught.value)
    assert victim.read_text() == "the user's own file"


@pytest.mark.parametrize("name", ["trials.jsonl", "runs.jsonl"])
def test_a_record_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, name):
    """trials.jsonl or runs.jsonl as a link (a folder unpacked from elsewhere): records and
    run events were appended to whatever file it points at."""
    from niah.errors import NiahError
    from niah.store import TrialWriter, append_run_log

    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / name).symlink_to(victim)
    rec = {"key": "k1", "context": 1024, "sample": 0, "depth": 0.5, "verdict": "PASS"}
    with pytest.raises(NiahError, match="is a link"):
        if name == "trials.jsonl":
            with TrialWriter(folder) as writer:
                writer.write(rec)
        else:
            append_run_log(folder, {"event": "start"})
    assert victim.read_text() == "the user's own file\n"


def test_a_failed_run_log_append_does_not_cut_another_ranks_line(tmp_path, monkeypatch):
    """The ranks of a group append to one runs.jsonl: a rank whose append failed (full disk)
    cut the file back to its size before, removing a line another rank wrote meanwhile."""
    import threading
    import time

    from niah.errors import NiahError
    from niah.store import append_run_log, read_run_log

    append_run_log(tmp_path, {"event": "start", "rank": 0})
    real_write, main = os.write, threading.get_ident()
    other = threading.Thread(target=append_run_log, args=(tmp_path, {"event": "end", "rank": 1}))

    def write_then_fill(fd, data):
        if threading.get_ident() != main:
            return real_write(fd, data)
        other.start()  # rank 1 appends while rank 0 is mid-write
        time.sleep(0.3)
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write_then_fill)
    with pytest.raises(NiahError, match="No space left"):
        append_run_log(tmp_path, {"event": "warm-up", "rank": 0})
    other.join(5)
    events = [(e["event"], e["rank"]) for e in read_run_log(tmp_path)]
    assert events == [("start", 0), ("end", 1)]


def test_a_cache_folder_the_system_cannot_use_is_one_line_and_a_run_without_cache(
    kquant, tmp_path, monkeypatch
):
    """A NIAH_CACHE_DIR whose name is too long (or, for a user, inside a folder they may not
    enter: EACCES) raised a traceback from Path.exists in `niah cache info/clear` and in a
    GGUF load that looks up the weight cache."""
    monkeypatch.setenv("NIAH_CACHE_DIR", str(tmp_path / ("a" * 300) / "cache"))
    for command in ("info", "clear"):
        result = invoke(["cache", command])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: the cache folder ") and "too long" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    raw = read_gguf(kquant)
    assert raw.cache == "unwritable" and raw.tensors


def test_a_run_folder_name_too_long_is_one_line(tmp_path):
    """Path.is_file / is_dir / exists raise on a name too long: `niah report`, `niah run
    --resume` and a new run's folder check (refuse_other_config) gave tracebacks."""
    from niah.store import refuse_other_config

    folder = tmp_path / ("a" * 300)
    for args in (["report", folder], ["run", "--resume", folder]):
        result = invoke(args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert refuse_other_config(folder / "run", config_hash="x", identity=None) is None
