"""The CI gate where mlx.launch drops exit codes: every rank logs a start and an end event in
runs.jsonl, `niah run` logs its --fail-under outcome, and `niah report --fail-under` re-checks
accuracy over every rank's trials file and fails (one line) on a rank that died or failed."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import invoke

from niah.errors import NiahError
from niah.run import ranks

REF = Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"


def _report(*args):
    return invoke(["report", *map(str, args)], catch_exceptions=False)


def _two_rank_folder(tmp_path, *, fail_rank1: bool = False) -> Path:
    """The reference run split into two ranks' files, as mlx.launch leaves it."""
    folder = tmp_path / "launched"
    shutil.copytree(REF, folder)
    recs = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]
    (folder / "trials.jsonl").unlink()
    half = len(recs) // 2
    for rank, part in ((0, recs[:half]), (1, recs[half:])):
        if rank == 1 and fail_rank1:
            part = [dict(r, verdict="FAIL") for r in part]
        (folder / f"trials.rank{rank}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part)
        )
    return folder


def _log(folder: Path, *events: dict) -> None:
    with open(folder / "runs.jsonl", "a") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")


def _start(launch, rank):
    return {"event": "start", "launch": launch, "rank": rank}


def _end(launch, rank, outcome="done", status=0):
    return {"event": "end", "launch": launch, "rank": rank, "outcome": outcome, "status": status}


def test_report_gates_on_every_rank_file(tmp_path):
    passing = _two_rank_folder(tmp_path)
    result = _report(passing, "--fail-under", "0.5")
    assert result.exit_code == 0, result.output
    assert "Total: 18 trials" in result.stdout  # both ranks' files counted
    failing = _two_rank_folder(tmp_path / "b", fail_rank1=True)
    result = _report(failing, "--fail-under", "0.9")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].startswith("accuracy ")


def test_report_fails_on_a_rank_that_started_and_never_ended(tmp_path):
    folder = _two_rank_folder(tmp_path)
    _log(folder, _start("L1", 0), _start("L1", 1), _end("L1", 0))
    result = _report(folder, "--fail-under", "0.5")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: run folder ")
    assert "rank 1 of launch L1 started and never ended" in result.stderr
    # without the gate the table is shown and the dead rank is a warning
    plain = _report(folder)
    assert plain.exit_code == 0 and "Total: 18 trials" in plain.stdout
    assert "warning: run folder " in plain.stderr


def test_report_fails_on_a_rank_that_ended_in_error(tmp_path):
    folder = _two_rank_folder(tmp_path)
    _log(
        folder,
        _start("L1", 0),
        _start("L1", 1),
        _end("L1", 1, ranks.ERROR, 2),
        _end("L1", 0, ranks.BELOW, 1),
    )
    result = _report(folder, "--fail-under", "0.5")
    assert result.exit_code == 1
    assert "rank 1 of launch L1 ended with error" in result.stderr
    assert "rank 0" not in result.stderr  # its own gate is re-checked from the records


def test_a_later_finished_launch_covers_a_dead_one(tmp_path):
    folder = _two_rank_folder(tmp_path)
    _log(
        folder,
        _start("L1", 0),
        _start("L1", 1),
        _end("L1", 0),  # rank 1 killed
        _start("L2", None),
        _end("L2", None),
    )  # niah run --resume
    assert _report(folder, "--fail-under", "0.5").exit_code == 0


def test_unfinished_ranks_ignores_folders_from_before_end_events():
    assert ranks.unfinished_ranks([{"event": "start", "rank": 0}, {"event": "warm-up"}]) == []
    assert ranks.unfinished_ranks([_start("A", None)]) == [
        "the run of launch A started and never ended (killed?)"
    ]


def _fake_sweep(monkeypatch, records):
    """`niah run` without a model; the fake logs the start event the real sweep logs."""
    from niah import run as runner
    from niah import store

    def sweep(cfg, *, launch=None, rank=None, **_):
        out = Path(cfg.out) / "fake-run"
        out.mkdir(parents=True, exist_ok=True)
        store.append_run_log(out, {"event": "start", "launch": launch, "rank": rank})
        return runner.RunResult(folder=out, config=cfg, records=list(records), ran=len(records))

    monkeypatch.setattr(runner, "run_sweep", sweep)


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "fail_under, code, outcome, gate",
    [("0.5", 0, "done", "pass"), ("1", 1, "below-threshold", "fail")],
)
def test_run_logs_its_gate_and_its_end(tmp_path, monkeypatch, fail_under, code, outcome, gate):
    recs = [json.loads(line) for line in (REF / "trials.jsonl").read_text().splitlines()]
    recs[0] = dict(recs[0], verdict="FAIL")
    _fake_sweep(monkeypatch, recs)
    result = invoke(
        ["run", "-c", "1k", "-q", "--out", str(tmp_path / "res"), "--fail-under", fail_under],
        catch_exceptions=False,
    )
    assert result.exit_code == code, result.output
    events = _events(tmp_path / "res" / "fake-run")
    start, logged_gate, end = events
    assert logged_gate["event"] == "gate" and logged_gate["status"] == gate
    assert logged_gate["threshold"] == float(fail_under) and logged_gate["accuracy"] == 17 / 18
    assert end == dict(
        end, event="end", launch=start["launch"], rank=None, status=code, outcome=outcome
    )
    assert ranks.unfinished_ranks(events) == []


@pytest.mark.parametrize(
    "exc, status, outcome",
    [(NiahError("bad"), 2, "error"), (KeyboardInterrupt(), 130, "interrupted")],
)
def test_a_sweep_that_fails_after_its_start_logs_its_end(tmp_path, exc, status, outcome):
    from niah.run.sweep import _logs_failure

    with pytest.raises(type(exc)):
        with _logs_failure(tmp_path, launch="L", rank=1):
            raise exc
    (end,) = _events(tmp_path)
    assert (end["event"], end["rank"], end["status"], end["outcome"]) == ("end", 1, status, outcome)
