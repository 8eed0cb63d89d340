"""Hostile pass, round four (after the layout): what a fresh attacker found on the new code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import invoke, read_records

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "results" / "reference"


def test_a_knob_given_twice_is_refused(tmp_path):
    result = invoke(
        [
            "run",
            "-c",
            "512",
            "--task",
            "variable-tracking",
            "--task-param",
            "hops=2",
            "--task-param",
            "hops=3",
            "-o",
            tmp_path,
        ]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --task-param hops is given twice (hops=2, hops=3): give each knob once\n"
    )
    assert not any(tmp_path.iterdir())


def test_a_cache_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    monkeypatch.setenv("NIAH_CACHE_DIR", str(afile))
    for args in (["cache", "info"], ["cache", "clear"]):
        result = invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == (
            f"error: the cache folder {str(afile)!r} is a file, not a "
            "folder: point NIAH_CACHE_DIR at a folder (or unset it)\n"
        )
    assert afile.read_text() == "not a folder"


def test_a_negative_time_in_a_record_is_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(REF / "smollm2-cpu-2026-11-27", folder)
    records = read_records(folder)
    records[0]["elapsed_s"] = -100
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = invoke(["report", folder])
    assert result.exit_code == 0
    assert "(line 1: elapsed_s is negative)" in result.stderr
    assert f"Total: {len(records) - 1} trials" in result.stdout
    assert "-100.00 s" not in result.stdout and "(-" not in result.stdout


def test_compare_warns_when_the_runs_ask_different_tasks():
    single = REF / "qwen15-128k-stock-h200-2026-12-04"
    vt = REF / "qwen15-task-variable-tracking-h200-2026-12-04"
    result = invoke(["report", single, vt, "--compare"])
    assert result.exit_code == 0, result.output
    assert (
        "warning: these runs ask different tasks (qwen15-128k-stock-h200-2026-12-04: "
        "single; qwen15-task-variable-tracking-h200-2026-12-04: variable-tracking): a "
        "changed cell measures that difference, not a regression"
    ) in result.stderr
    same = invoke(["report", single, REF / "qwen15-128k-chunked-h200-2026-12-04", "--compare"])
    assert "ask different" not in same.stderr
