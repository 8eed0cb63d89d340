"""The results store: one JSON line per finished trial, appended and flushed at once.

A run folder holds ``config.json`` (the RunConfig) and ``trials.jsonl`` (or
``trials.rank<N>.jsonl`` per rank in a distributed run). A line is appended whole or not at
all: a write that fails (a full disk) is cut back off the file and ends the run with one line.
A process killed mid-write can still leave half a line: reading skips a corrupt line with a
warning and keeps the rest, and the next append ends it first, so no finished trial is lost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .errors import NiahError
from .run.grid import merge_grids
from .run.records import RETRIED, dumps, problem

CONFIG_FILE = "config.json"
TRIALS_GLOB = "trials*.jsonl"


class StoreWarning(UserWarning):
    pass


def run_folder(config: RunConfig, model_name: str, *, config_hash: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name)[-48:].strip("-.")
    return Path(config.out) / f"{slug or 'model'}-{config_hash}"


def prepare_folder(
    folder: Path, config: RunConfig, *, config_hash: str | None = None, identity: dict | None = None
) -> None:
    """Create the folder and write config.json; one clear error when it cannot be written.

    A folder that already holds a run of the same configuration keeps the union of both
    runs' asked cells in config.json (so --resume later runs every trial either asked for,
    and no other); a folder of another configuration is refused.
    """
    config_hash = config_hash or config.hash()
    path = Path(folder) / CONFIG_FILE
    old = refuse_other_config(folder, config_hash=config_hash, identity=identity)
    if old is not None:
        config = merge_grids(old.config, config)
    data = config.to_dict()
    data["config_hash"] = config_hash
    if identity:
        data["identity"] = identity
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_then_rename(Path(folder) / f".write-test-{os.getpid()}", "ok", None)
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
        write_then_rename(Path(folder) / f"{CONFIG_FILE}.{os.getpid()}.tmp", text, path)
    except OSError as exc:
        raise NiahError(
            f"cannot write to output folder {str(folder)!r} ({exc.strerror or exc}): "
            "choose a writable --out"
        ) from None


def write_then_rename(tmp: Path, text: str, target: Path | None) -> None:
    """Write `text` to `tmp`, then rename it onto `target` (None: delete it, a write probe);
    `tmp` never stays behind, also when the write fails (a full disk)."""
    try:
        tmp.write_text(text)
        if target is not None:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def refuse_other_config(
    folder: Path, *, config_hash: str, identity: dict | None
) -> StoredRun | None:
    """The run a folder holds (None where it holds none yet); refused with one line when it
    holds results of another configuration than `config_hash`."""
    if not os.path.isfile(Path(folder) / CONFIG_FILE):
        return None
    old = load_run(folder)
    if old.config_hash and old.config_hash != config_hash:
        from .identity import describe_difference, differing_keys

        before, now = old.identity or {}, identity or {}
        if differing_keys(before, now) == ["mlx_env"]:
            raise NiahError(_other_mlx_env(folder, before.get("mlx_env"), now.get("mlx_env")))
        what = describe_difference(before, now) or "the run options"
        raise NiahError(
            f"{str(folder)!r} holds results of another configuration ({what}): "
            "start a new run without --resume, or give another --out"
        )
    return old


def _other_mlx_env(folder: Path, made: str | None, here: str | None) -> str:
    """The refusal of a folder whose trials ran under other MLX batching variables than this
    process has (identity.mlx_env): the one fix is the environment it was made under."""
    unset = "none of MLX's batching variables set"
    return (
        f"{str(folder)!r} was made under {made or unset}, but this process has {here or unset}: "
        "resume under the environment the folder was made under, or start a new run without "
        "--resume into another --out"
    )


def _config_data(folder: Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not os.path.isfile(path):  # False (not a traceback) for a name too long
        raise NiahError(
            f"{str(folder)!r} is not a niah run folder (no {CONFIG_FILE}): "
            "give a folder made by niah run"
        )
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise NiahError(
            f"{str(path)!r} is not a valid niah config ({exc}): re-run niah run"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise NiahError(
            f"{str(path)!r} is not a valid niah config (not an object with a "
            "model): re-run niah run into a new folder"
        )
    return data


@dataclass(frozen=True)
class StoredRun:
    """A run folder's config.json, read once: the options, the hash its trials were written
    with and the identity behind that hash (None for folders made before either existed)."""

    config: RunConfig
    config_hash: str | None
    identity: dict | None

    def recomputed_hash(self) -> str:
        """The hash config.json's own content gives; differs from config_hash when the file
        was edited after the run."""
        return self.config.hash(self.identity)


def load_run(folder: Path) -> StoredRun:
    data = _config_data(folder)
    try:
        config = RunConfig.from_dict(data)
    except (ValueError, TypeError, AttributeError, NiahError) as exc:
        raise NiahError(
            f"{str(Path(folder) / CONFIG_FILE)!r} is not a valid niah config "
            f"({exc}): re-run niah run"
        ) from None
    return StoredRun(
        config=config,
        config_hash=_stored(data, "config_hash", str),
        identity=_stored(data, "identity", dict),
    )


def load_config(folder: Path) -> RunConfig:
    return load_run(folder).config


def _stored(data: dict, name: str, kind: type):
    value = data.get(name)
    return value if isinstance(value, kind) else None


def stored_hash(folder: Path) -> str | None:
    """The config hash config.json was written with (None for a folder without one)."""
    return _stored(_config_data(folder), "config_hash", str)


class FolderLock:
    """Keeps two niah processes from running the same trials of one run folder.

    A plain run holds the folder's lock exclusively; each rank of an mlx.launch group holds it
    shared (ranks of one group run together) plus its own rank's lock exclusively. A second
    process that cannot take its lock gets one line naming the holder; a lock refused for
    another reason (no lock support, I/O error) says that reason, never blaming a run. The
    lock goes with the process, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, folder: Path, *, rank: int | None = None):
        self.folder, self.rank = Path(folder), rank
        self._handles: list = []

    def _take(self, name: str, mode: int) -> None:
        import fcntl
        import socket

        fh = self._open(self.folder / name)
        try:
            fcntl.flock(fh.fileno(), mode | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise self._refusal(exc, holder) from None
        if mode == fcntl.LOCK_EX:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
            fh.flush()
        self._handles.append(fh)

    def _open(self, path: Path):
        """The lock file, opened for reading and writing (created when missing). A link or
        anything but a plain file is refused: its holder line would overwrite the file a
        link points at (a run folder unpacked from elsewhere)."""
        import stat

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            if path.is_symlink():
                raise NiahError(
                    f"{str(path)!r} is a link, not niah's lock file: delete it (niah makes "
                    "its own) and run again"
                ) from None
            raise NiahError(
                f"cannot write to output folder {str(self.folder)!r} "
                f"({exc.strerror or exc}): choose a writable --out"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NiahError(
                f"{str(path)!r} is not a plain file, not niah's lock file: delete it and run again"
            )
        return os.fdopen(fd, "r+", encoding="utf-8")

    def _refusal(self, exc: OSError, holder: str) -> NiahError:
        """Why the lock was refused: another run only when it is held (EWOULDBLOCK); any
        other error (no lock support, I/O error) says what it was."""
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return NiahError(
                f"another niah run ({holder}) is writing to {str(self.folder)!r}: wait for it "
                "to finish, or give another --out"
            )
        return NiahError(
            f"cannot lock output folder {str(self.folder)!r} ({exc.strerror or exc}): choose "
            "a writable --out on a file system with file locks (a local disk)"
        )

    def __enter__(self):
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NiahError(
                f"cannot write to output folder {str(self.folder)!r} "
                f"({exc.strerror or exc}): choose a writable --out"
            ) from None
        if self.rank is None:
            self._take(".lock", fcntl.LOCK_EX)
        else:
            self._take(".lock", fcntl.LOCK_SH)
            self._take(f".lock.rank{self.rank}", fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        for fh in self._handles:
            fh.close()
        self._handles.clear()


def append_whole(fd: int, data: bytes) -> None:
    """Append `data` (whole lines) to the file open as `fd` (O_RDWR | O_APPEND) and flush it
    to disk, or leave the file as it was: on an error (a full disk, after a short write) the
    file is cut back to its size before and the OSError raised. A partial last line left by
    a killed writer is ended first, so the new line starts on its own."""
    start = os.lseek(fd, 0, os.SEEK_END)
    if start and os.pread(fd, 1, start - 1) != b"\n":
        data = b"\n" + data
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def open_for_append(path: Path) -> int:
    """A descriptor appending to `path` (created when missing). A link there is refused
    with one line, never followed: a run folder unpacked from elsewhere must not make niah
    append records to a file of the user's it points at."""
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError:
        if Path(path).is_symlink():
            raise NiahError(
                f"{str(path)!r} is a link: niah writes only files of its own there; move the "
                "link out of the run folder (or copy what it points at in its place)"
            ) from None
        raise


class TrialWriter:
    """Appends one record per line and flushes to disk after each; a record that cannot be
    written whole (a full disk) leaves no part of it behind and ends the run with one line."""

    def __init__(self, folder: Path, *, rank: int | None = None):
        name = "trials.jsonl" if rank is None else f"trials.rank{rank}.jsonl"
        self.path = Path(folder) / name
        try:
            self._fd = open_for_append(self.path)
        except OSError as exc:
            raise NiahError(
                f"cannot write {str(self.path)!r} ({exc.strerror}): choose a writable --out"
            ) from None

    def write(self, record: dict) -> None:
        record = {**record, "written_at": round(time.time(), 6)}
        try:
            line = dumps(record)
        except ValueError:
            raise NiahError(
                f"trial {record.get('key')} holds a number JSON cannot store "
                "(NaN or infinity): check the run options (e.g. --rope-scaling)"
            ) from None
        try:
            append_whole(self._fd, (line + "\n").encode("utf-8"))
        except OSError as exc:
            raise NiahError(
                f"cannot write {str(self.path)!r} ({exc.strerror or exc}): every trial before "
                f"this one is kept; free space, then finish with niah run --resume "
                f"{str(self.path.parent)!r}"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


RUN_LOG = "runs.jsonl"


def append_run_log(folder: Path, entry: dict) -> None:
    """One line per run event with a one-time cost (warm-up): kept out of every trial.
    Appended under the file's own lock: the ranks of a group share it."""
    import fcntl

    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), **entry}
    path = Path(folder) / RUN_LOG
    try:
        fd = open_for_append(path)
        try:
            with contextlib.suppress(OSError):  # a cut-back must not cut another's line
                fcntl.flock(fd, fcntl.LOCK_EX)
            append_whole(fd, (dumps(entry) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise NiahError(
            f"cannot write {str(path)!r} ({exc.strerror or exc}): move it out of the "
            "run folder or choose a writable --out"
        ) from None


def read_run_log(folder: Path) -> list[dict]:
    """The events of runs.jsonl (start, warm-up), oldest first; none when it is absent. A
    line cut by a run killed mid-write is skipped: an event it held is missing, as an end
    event of a killed run is (the gate then names that run unfinished), never a traceback."""
    path = Path(folder) / RUN_LOG
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def written_at(rec: dict) -> float:
    """When a record was written: its written_at stamp, else its time field, else 0."""
    value = rec.get("written_at")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    import datetime

    try:
        return datetime.datetime.strptime(str(rec.get("time")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return 0.0


def read_trials(folder: Path, *, config_hash: str | None = None) -> list[dict]:
    """Every valid record in the folder's trials*.jsonl, in the order they were written.

    Corrupt or malformed lines are skipped with one warning per file. With `config_hash`,
    records of any other configuration (a file copied in from elsewhere) are left out with a
    warning: they are never mixed into this run's results.
    """
    rows = []
    for index, path in enumerate(sorted(Path(folder).glob(TRIALS_GLOB))):
        bad: list[str] = []
        foreign = 0
        latest = float("-inf")  # a file's lines are in write order even if the clock stepped back
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        except OSError as exc:
            raise NiahError(
                f"cannot read {str(path)!r} ({exc.strerror or exc}): move it out of the run folder"
            ) from None
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            why = "not JSON" if rec is None else problem(rec)
            if why:
                bad.append(f"line {lineno}: {why}")
            elif config_hash and rec.get("config_hash") != config_hash:
                foreign += 1
            else:
                latest = max(latest, written_at(rec))
                rows.append((latest, index, lineno, rec))
        if bad:
            warnings.warn(
                f"skipped {len(bad)} corrupt line(s) of {path} ({bad[0]}"
                f"{', ...' if len(bad) > 1 else ''})",
                StoreWarning,
                stacklevel=2,
            )
        if foreign:
            warnings.warn(
                f"left out {foreign} record(s) of {path} made by another "
                f"configuration (not config {config_hash})",
                StoreWarning,
                stacklevel=2,
            )
    rows.sort(key=lambda row: row[:3])
    return [row[3] for row in rows]


def folder_records(folder: Path) -> list[dict]:
    """The records of a run folder that belong to its own configuration."""
    return read_trials(folder, config_hash=stored_hash(folder))


def latest_by_key(records: list[dict]) -> dict[str, dict]:
    """The last record per trial key (a retried trial is replaced by its rerun)."""
    out: dict[str, dict] = {}
    for rec in records:
        out[rec["key"]] = rec
    return out


def finished_keys(folder: Path) -> set[str]:
    """Keys of this configuration's trials that need no rerun."""
    return {
        k
        for k, r in latest_by_key(folder_records(folder)).items()
        if r.get("verdict") not in RETRIED
    }
