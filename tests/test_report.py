"""Reports against the committed reference run (golden Markdown, CSV and terminal text),
exports, JUnit, comparisons, the impossible-timing guard, gating and bad input."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niah import report
from niah.cli import app

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "results" / "reference" / "smollm2-cpu-2026-11-27"
GOLDEN = Path(__file__).resolve().parent / "golden"
runner = CliRunner()


def _report(*args):
    return runner.invoke(app, ["report", *map(str, args)], catch_exceptions=False)


def test_golden_markdown_csv_and_text(tmp_path):
    result = _report(REF, "--markdown", tmp_path / "r.md", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "report.txt").read_text().replace(
        "results/reference/smollm2-cpu-2026-11-27", str(REF))
    assert (tmp_path / "r.md").read_text() == (GOLDEN / "report.md").read_text()
    assert (tmp_path / "r.csv").read_text() == (GOLDEN / "report.csv").read_text()


def test_json_parquet_heatmap_junit(tmp_path):
    result = _report(REF, "--json", tmp_path / "r.json", "--parquet", tmp_path / "r.parquet",
                     "--heatmap", tmp_path / "h.png", "--junit", tmp_path / "j.xml")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r.json").read_text())
    assert len(rows) == 18 and rows[0]["verdict"] == "PASS"
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "r.parquet")) == 18
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "18" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 18


def _copy_with(tmp_path, name, mutate) -> Path:
    dst = tmp_path / name
    shutil.copytree(REF, dst)
    lines = (dst / "trials.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    recs = mutate(recs)
    (dst / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return dst


def test_suspect_flag_on_planted_impossible_trial(tmp_path):
    def plant(recs):
        fake = dict(recs[0], key="planted", context=262144, context_tokens=262144,
                    prefilled_tokens=262144, prefill_s=0.05, ttft_s=0.05, elapsed_s=0.05,
                    device="cuda (NVIDIA H100 80GB HBM3)")
        return recs + [fake]

    folder = _copy_with(tmp_path, "planted", plant)
    result = _report(folder)
    assert result.exit_code == 0
    suspects = [line for line in result.stdout.splitlines() if line.startswith("SUSPECT")]
    assert len(suspects) == 1
    assert suspects[0].startswith("SUSPECT: context 262144 depth 0 sample 0: prefill at ")
    assert "above the device peak of 989" in suspects[0]
    # real trials are never flagged
    recs = [json.loads(line) for line in (REF / "trials.jsonl").read_text().splitlines()]
    assert not any(report.suspect(r) for r in recs)


def test_compare_two_runs_and_changed_cells(tmp_path):
    def flip(recs):
        recs[0] = dict(recs[0], verdict="FAIL", response="no idea")
        return recs

    other = _copy_with(tmp_path, "other", flip)
    result = _report(REF, other, "--compare")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Context", "Depth", "smollm2-cpu-2026-11-27", "other", "Δ", "other", "Changed"]
    changed = [line for line in lines if line.rstrip().endswith("yes")]
    assert len(changed) == 1 and changed[0].split()[:4] == ["1K", "0%", "PASS/PASS", "FAIL/PASS"]
    assert "-50%" in changed[0]
    assert lines[-1] == ("smollm2-cpu-2026-11-27: accuracy 100%; other: accuracy 94%; "
                         "1 cell(s) changed verdict")


def test_compare_tells_missing_cells_from_changed_verdicts(tmp_path):
    other = _copy_with(tmp_path, "other", lambda recs: [r for r in recs if r["context"] != 4096])
    result = _report(other, REF, "--compare")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    missing = [line for line in lines if line.rstrip().endswith("missing in the baseline")]
    assert [line.split()[:2] for line in missing] == [["4K", "0%"], ["4K", "50%"], ["4K", "100%"]]
    assert not any(line.rstrip().endswith("yes") for line in lines)
    assert lines[-1].endswith("; 0 cell(s) changed verdict; 3 cell(s) missing from a run")
    reverse = _report(REF, other, "--compare").stdout.splitlines()
    assert sum(line.rstrip().endswith("missing in other") for line in reverse) == 3


def test_answers_cut_at_the_token_limit_are_flagged(tmp_path):
    def cut(recs):
        recs[0] = dict(recs[0], verdict="FAIL", response="The passkey is 12", finish="length",
                       generated_tokens=8)
        recs[1] = dict(recs[1], finish="length", generated_tokens=8)  # a PASS stays unflagged
        return recs

    result = _report(_copy_with(tmp_path, "cut", cut))
    assert result.exit_code == 0, result.output
    assert result.stderr == ("warning: 1 trial(s) that did not pass stopped at the answer limit "
                             "(8 tokens) before the answer ended: their verdict may reflect the "
                             "cut, not retrieval; rerun with a larger --max-tokens\n")
    assert _report(REF).stderr == ""


def test_mixed_configs_need_compare(tmp_path):
    other = tmp_path / "seed1"
    shutil.copytree(REF, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["seed"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    result = _report(REF, other)
    assert result.exit_code == 2
    assert result.stderr == (f"warning: {str(other / 'config.json')!r} no longer matches the "
                             "config ead3737e93d2 its trials were run with (edited after the "
                             "run?): the table shows the trials as recorded\n"
                             "error: these runs are different experiments (config 692d08c1ce60 on "
                             "cpu (AMD EPYC); config ead3737e93d2 on cpu (AMD EPYC)): pass --compare "
                             "to see them side by side, or report them one at a time\n")


def test_bad_report_input(tmp_path):
    result = _report(tmp_path / "nope")
    assert result.exit_code == 2
    assert result.stderr == f"error: run folder {str(tmp_path / 'nope')!r} does not exist: give a folder made by niah run\n"
    (tmp_path / "foreign").mkdir()
    result = _report(tmp_path / "foreign")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {str(tmp_path / 'foreign')!r} is not a niah run folder (no "
                             "config.json): give a folder made by niah run\n")
    result = _report(REF, "--csv", tmp_path / "no" / "dir" / "x.csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot write ") and result.stderr.count("\n") == 1


def test_fail_under_gates(tmp_path):
    def half(recs):
        for r in recs[:9]:
            r["verdict"] = "FAIL"
        return recs

    folder = _copy_with(tmp_path, "half", half)
    assert _report(folder, "--fail-under", "0.5").exit_code == 0
    result = _report(folder, "--fail-under", "0.9")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "accuracy 50.0% is below --fail-under 90.0%"


def test_wilson_and_effective_context():
    lo, hi = report.wilson(2, 2)
    assert round(lo, 3) == 0.342 and hi == 1.0
    lo, hi = report.wilson(5, 10)
    assert round(lo, 3) == 0.237 and round(hi, 3) == 0.763
    recs = []
    for ctx, passes in ((1024, 4), (2048, 4), (4096, 3), (8192, 1), (16384, 4)):
        for i in range(4):
            recs.append({"context": ctx, "depth": i / 4, "verdict": "PASS" if i < passes else "FAIL"})
    assert report.effective_context(recs) == 2048  # 4K is 75% < 85% of 100%
    assert report.effective_context(recs, threshold=0.7) == 4096


def test_export_to_a_full_disk_is_one_line():
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    result = _report(REF, "--csv", "/dev/full")
    assert result.exit_code == 2
    assert result.stderr == ("error: cannot write the export (No space left on device): free "
                             "space or choose another path\n")
