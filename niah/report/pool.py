"""Reading run folders for `niah report`: each folder's latest record per trial, and pooling
several folders of one experiment into one set of records (one record per needle). Folders of
different experiments are refused unless compared side by side."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import store
from ..errors import NiahError


@dataclass(frozen=True)
class LoadedRun:
    name: str  # the folder as given
    stored: store.StoredRun
    records: list[dict]  # latest record per trial key


def load_runs(folders: list[Path], *, warn: Callable[[str], None]) -> list[LoadedRun]:
    """Read each folder; warnings (unreadable lines, an edited config.json) go to `warn` as
    they are found. Refuses a missing folder or one without finished trials."""
    loaded = []
    for folder in folders:
        if not os.path.isdir(folder):  # False (not a traceback) for a name too long
            raise NiahError(
                f"run folder {str(folder)!r} does not exist: give a folder made by niah run"
            )
        stored = store.load_run(folder)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recs = list(
                store.latest_by_key(
                    store.read_trials(folder, config_hash=stored.config_hash)
                ).values()
            )
        for w in caught:
            warn(str(w.message))
        if not recs:
            raise NiahError(
                f"run folder {str(folder)!r} has no finished trials: run niah run first"
            )
        loaded.append(LoadedRun(name=str(folder), stored=stored, records=recs))
    for run in loaded:
        if run.stored.config_hash and run.stored.recomputed_hash() != run.stored.config_hash:
            warn(
                f"{str(Path(run.name) / 'config.json')!r} no longer matches the config "
                f"{run.stored.config_hash} its trials were run with (edited after the run?): "
                "the table shows the trials as recorded"
            )
    return loaded


def rank_problems(run: LoadedRun) -> list[str]:
    """The folder's ranks (or single runs) that started and did not finish well, read from
    runs.jsonl's start and end events (niah.run.ranks.unfinished_ranks): mlx.launch exits 0
    whatever its ranks did, so a gate must read this from the folder."""
    from ..run.ranks import unfinished_ranks

    return unfinished_ranks(store.read_run_log(Path(run.name)))


def experiment(run: LoadedRun) -> tuple[str, tuple[str, ...]]:
    """What makes two run folders the same experiment: the hash of their config and identity
    (model, haystack, backend, versions...: recomputed, so an edited config.json counts as
    another experiment) and, for folders written before the hash covered the device, the
    devices their records name."""
    devices = tuple(sorted({str(r.get("device")) for r in run.records}))
    return (run.stored.recomputed_hash(), devices)


def check_poolable(runs: list[LoadedRun], *, compare: bool) -> None:
    """Several experiments need --compare; --compare needs two folders or more."""
    experiments = {experiment(run) for run in runs}
    if len(experiments) > 1 and not compare:
        raise NiahError(
            "these runs are different experiments ("
            + "; ".join(f"config {h} on {', '.join(d)}" for h, d in sorted(experiments))
            + "): pass --compare to see them side by side, or report them one at a time"
        )
    if compare and len(runs) < 2:
        raise NiahError("--compare needs two or more run folders")


def compare_warnings(runs: list[LoadedRun]) -> list[str]:
    """What --compare sets side by side that measures different things: runs of other tasks
    (or thinking modes, or haystacks) differ by design, not by a regression."""
    out = []
    for field, what in (
        ("task", "tasks"),
        ("thinking", "--thinking modes"),
        ("haystack_digest", "haystacks"),
    ):
        seen = {
            run.name: sorted(
                {str(r.get(field, "single" if field == "task" else "?")) for r in run.records}
            )
            for run in runs
        }
        if len({tuple(v) for v in seen.values()}) > 1:
            shown = "; ".join(f"{Path(n).name}: {', '.join(v)}" for n, v in seen.items())
            out.append(
                f"these runs ask different {what} ({shown}): a changed cell measures "
                "that difference, not a regression"
            )
    return out


def pooled(runs: list[LoadedRun]) -> list[dict]:
    """One experiment in several folders: a trial key is one needle, counted once (the
    latest record wins)."""
    return list(
        store.latest_by_key(
            sorted((r for run in runs for r in run.records), key=store.written_at)
        ).values()
    )


def all_records(runs: list[LoadedRun]) -> list[dict]:
    """Every folder's records side by side (--compare): nothing is pooled."""
    return [r for run in runs for r in run.records]
