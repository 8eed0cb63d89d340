"""The results store: one JSON line per finished trial, appended and flushed at once.

A run folder holds ``config.json`` (the RunConfig) and ``trials.jsonl`` (or
``trials.rank<N>.jsonl`` per rank in a distributed run). Reading skips a corrupt line with a
warning and keeps the rest, so a crash mid-write never loses finished trials.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .config import RunConfig
from .errors import NiahError

CONFIG_FILE = "config.json"
TRIALS_GLOB = "trials*.jsonl"


class StoreWarning(UserWarning):
    pass


def run_folder(config: RunConfig, model_name: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name)[-48:].strip("-.")
    return Path(config.out) / f"{slug or 'model'}-{config.hash()}"


def prepare_folder(folder: Path, config: RunConfig) -> None:
    """Create the folder and write config.json; one clear error when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
        data = config.to_dict()
        data["config_hash"] = config.hash()
        tmp = folder / f"{CONFIG_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, folder / CONFIG_FILE)
    except OSError as exc:
        raise NiahError(
            f"cannot write to output folder {str(folder)!r} ({exc.strerror or exc}): "
            "choose a writable --out"
        ) from None


def load_config(folder: Path) -> RunConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise NiahError(f"{str(folder)!r} is not a niah run folder (no {CONFIG_FILE}): "
                        "give a folder made by niah run")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, NiahError) as exc:
        raise NiahError(f"{str(path)!r} is not a valid niah config ({exc}): re-run niah run") from None


class TrialWriter:
    """Appends one record per line and flushes to disk after each."""

    def __init__(self, folder: Path, *, rank: int | None = None):
        name = "trials.jsonl" if rank is None else f"trials.rank{rank}.jsonl"
        self.path = Path(folder) / name
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
            # A crash mid-write leaves a partial last line: end it so the next record starts
            # on a line of its own (the partial one is then skipped as corrupt).
            if self.path.stat().st_size:
                with open(self.path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        self._fh.write("\n")
                        self._fh.flush()
        except OSError as exc:
            raise NiahError(f"cannot write {str(self.path)!r} ({exc.strerror}): choose a writable --out") from None

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_trials(folder: Path) -> list[dict]:
    """Every record in the folder's trials*.jsonl; corrupt lines skipped with a warning."""
    records = []
    for path in sorted(Path(folder).glob(TRIALS_GLOB)):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict) or "key" not in rec:
                        raise ValueError("not a trial record")
                except ValueError:
                    warnings.warn(f"skipped corrupt line {lineno} of {path}", StoreWarning,
                                  stacklevel=2)
                    continue
                records.append(rec)
    return records


def latest_by_key(records: list[dict]) -> dict[str, dict]:
    """The last record per trial key (a retried ERROR is replaced by its rerun)."""
    out: dict[str, dict] = {}
    for rec in records:
        out[rec["key"]] = rec
    return out


def finished_keys(folder: Path) -> set[str]:
    """Keys of trials that need no rerun (every verdict except ERROR)."""
    return {k for k, r in latest_by_key(read_trials(folder)).items() if r.get("verdict") != "ERROR"}
