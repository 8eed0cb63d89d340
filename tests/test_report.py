"""Reports against the committed reference run (golden Markdown, CSV and terminal text),
exports, JUnit, comparisons, the impossible-timing guard, gating and bad input; the export
registry shared by `run` and `report`, atomic exports (a full device, a file that cannot be
finished, a read-only folder) and the run summary (`run` without a model: a fake sweep)."""

import json
import os
import shutil
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import invoke, read_records

from niah import report
from niah.cli import app

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "results" / "reference" / "smollm2-cpu-2026-11-27"
GOLDEN = Path(__file__).resolve().parent / "golden"


def _report(*args):
    return invoke(["report", *map(str, args)], catch_exceptions=False)


def test_golden_markdown_csv_and_text(tmp_path):
    result = _report(REF, "--markdown", tmp_path / "r.md", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "report.txt").read_text().replace(
        "results/reference/smollm2-cpu-2026-11-27", str(REF)
    )
    assert (tmp_path / "r.md").read_text() == (GOLDEN / "report.md").read_text()
    assert (tmp_path / "r.csv").read_text() == (GOLDEN / "report.csv").read_text()


def test_json_parquet_heatmap_junit(tmp_path):
    result = _report(
        REF,
        "--json",
        tmp_path / "r.json",
        "--parquet",
        tmp_path / "r.parquet",
        "--heatmap",
        tmp_path / "h.png",
        "--junit",
        tmp_path / "j.xml",
    )
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
    recs = mutate(read_records(dst))
    (dst / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return dst


def test_suspect_flag_on_planted_impossible_trial(tmp_path):
    def plant(recs):
        fake = dict(
            recs[0],
            key="planted",
            context=262144,
            context_tokens=262144,
            prefilled_tokens=262144,
            prefill_s=0.05,
            ttft_s=0.05,
            elapsed_s=0.05,
            device="cuda (NVIDIA H100 80GB HBM3)",
        )
        return recs + [fake]

    folder = _copy_with(tmp_path, "planted", plant)
    result = _report(folder)
    assert result.exit_code == 0
    suspects = [line for line in result.stdout.splitlines() if line.startswith("SUSPECT")]
    assert len(suspects) == 1
    assert suspects[0].startswith("SUSPECT: context 262144 depth 0 sample 0: prefill at ")
    assert "above the device peak of 989" in suspects[0]
    # real trials are never flagged
    recs = read_records(REF)
    assert not any(report.suspect(r) for r in recs)


def test_compare_two_runs_and_changed_cells(tmp_path):
    def flip(recs):
        recs[0] = dict(recs[0], verdict="FAIL", response="no idea")
        return recs

    other = _copy_with(tmp_path, "other", flip)
    result = _report(REF, other, "--compare")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Context",
        "Depth",
        "smollm2-cpu-2026-11-27",
        "other",
        "Δ",
        "other",
        "Changed",
    ]
    changed = [line for line in lines if line.rstrip().endswith("yes")]
    assert len(changed) == 1 and changed[0].split()[:4] == ["1K", "0%", "PASS/PASS", "FAIL/PASS"]
    assert "-50%" in changed[0]
    assert lines[-1] == (
        "smollm2-cpu-2026-11-27: accuracy 100%; other: accuracy 94%; 1 cell(s) changed verdict"
    )


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
        recs[0] = dict(
            recs[0],
            verdict="FAIL",
            response="The passkey is 12",
            finish="length",
            generated_tokens=8,
        )
        recs[1] = dict(recs[1], finish="length", generated_tokens=8)  # a PASS stays unflagged
        return recs

    result = _report(_copy_with(tmp_path, "cut", cut))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: 1 trial(s) that did not pass stopped at the answer limit "
        "(8 tokens) before the answer ended: their verdict may reflect the "
        "cut, not retrieval; rerun with a larger --max-tokens\n"
    )
    assert _report(REF).stderr == ""


def test_mixed_configs_need_compare(tmp_path):
    other = tmp_path / "seed1"
    shutil.copytree(REF, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["seed"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    result = _report(REF, other)
    assert result.exit_code == 2
    assert result.stderr == (
        f"warning: {str(other / 'config.json')!r} no longer matches the "
        "config ead3737e93d2 its trials were run with (edited after the "
        "run?): the table shows the trials as recorded\n"
        "error: these runs are different experiments (config 692d08c1ce60 on "
        "cpu (AMD EPYC); config ead3737e93d2 on cpu (AMD EPYC)): pass --compare "
        "to see them side by side, or report them one at a time\n"
    )


def test_bad_report_input(tmp_path):
    result = _report(tmp_path / "nope")
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: run folder {str(tmp_path / 'nope')!r} does not exist: give a folder made by niah run\n"
    )
    (tmp_path / "foreign").mkdir()
    result = _report(tmp_path / "foreign")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {str(tmp_path / 'foreign')!r} is not a niah run folder (no "
        "config.json): give a folder made by niah run\n"
    )
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
    assert (
        result.stdout.splitlines()[-1]
        == "accuracy 50.0% over 18 trials is below --fail-under 90.0%"
    )


def test_wilson_and_effective_context():
    lo, hi = report.wilson(2, 2)
    assert round(lo, 3) == 0.342 and hi == 1.0
    lo, hi = report.wilson(5, 10)
    assert round(lo, 3) == 0.237 and round(hi, 3) == 0.763
    recs = []
    for ctx, passes in ((1024, 4), (2048, 4), (4096, 3), (8192, 1), (16384, 4)):
        for i in range(4):
            recs.append(
                {"context": ctx, "depth": i / 4, "verdict": "PASS" if i < passes else "FAIL"}
            )
    assert report.effective_context(recs) == 2048  # 4K is 75% < 85% of 100%
    assert report.effective_context(recs, threshold=0.7) == 4096


FULL = "/dev/full"
needs_full = pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full on this system")


def _records(folder=REF) -> list[dict]:
    return read_records(folder)


def _fake_sweep(monkeypatch, records, *, ran=None, done=0):
    """`niah run` without a model: the sweep returns these records (the CLI's own parsing,
    summary, exports and gate run as usual)."""
    from niah import run as runner

    def sweep(cfg, *, folder=None, **_):
        out = folder if folder is not None else Path(cfg.out) / "fake-run"
        out.mkdir(parents=True, exist_ok=True)
        return runner.RunResult(
            folder=out,
            config=cfg,
            records=list(records),
            ran=len(records) if ran is None else ran,
            skipped_done=done,
        )

    monkeypatch.setattr(runner, "run_sweep", sweep)


def _run(tmp_path, *args, cli_app=app):
    return invoke(
        ["run", "-c", "1k", "-q", "--out", str(tmp_path / "res"), *map(str, args)],
        app=cli_app,
        catch_exceptions=False,
    )


def _full_target(tmp_path, option: str) -> str:
    """/dev/full, or for --heatmap (which wants a .png name) a .png link to it."""
    if option != "--heatmap":
        return FULL
    link = tmp_path / "full.png"
    link.symlink_to(FULL)
    return str(link)


@needs_full
@pytest.mark.parametrize("option", [e.option for e in report.EXPORTS.values()])
def test_report_export_onto_a_full_device_is_one_line(tmp_path, option):
    target = _full_target(tmp_path, option)
    result = _report(REF, option, target)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: cannot write {option} {target!r} (No space left on "
        "device): free space or choose another path\n"
    )


@needs_full
@pytest.mark.parametrize("option", ["--junit", "--csv", "--markdown", "--heatmap"])
def test_run_export_onto_a_full_device_is_one_line(tmp_path, monkeypatch, option):
    _fake_sweep(monkeypatch, _records())
    target = _full_target(tmp_path, option)
    result = _run(tmp_path, option, target)
    assert result.exit_code == 2, result.output
    assert result.stdout.startswith("Run folder: ")  # the table was printed before the export
    assert result.stderr == (
        f"error: cannot write {option} {target!r} (No space left on "
        "device): free space or choose another path\n"
    )


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file size limit on this system")
def test_heatmap_that_cannot_be_finished_leaves_no_partial_file(tmp_path):
    """A disk that fills while the PNG is written (here: a 4 KB file size limit, so the write
    fails part way): one line, exit 2, and no truncated PNG beside the run."""
    import resource

    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "h.png"
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        result = _report(REF, "--heatmap", target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: cannot write --heatmap {str(target)!r} (File too large): "
        "free space or choose another path\n"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_exports_replace_files_whole_and_leave_no_temporary(tmp_path):
    target = tmp_path / "r.md"
    target.write_text("old table\n" * 1000)
    result = _report(REF, "--markdown", target, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 0, result.output
    assert target.read_text() == (GOLDEN / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.xml", "r.md"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "j.xml").stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain new file


@pytest.mark.parametrize("where", ["chmod", "sys"])
def test_export_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch, where):
    if where == "chmod":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: folder permissions do not apply")
    else:
        folder = Path("/sys")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            pytest.skip("needs /sys that only refuses at write time (root on Linux)")
        try:
            (folder / "niah-probe").touch()
            pytest.skip("/sys is writable here")
        except OSError:
            pass
    target = folder / "r.csv"
    expected = (
        f"error: cannot write --csv {str(target)!r} (permission denied): choose a writable path\n"
        if where == "chmod"
        else f"error: cannot write --csv {str(target)!r} (Permission denied): choose a "
        "writable path\n"
    )
    result = _report(REF, "--csv", target)
    assert (result.exit_code, result.stderr) == (2, expected)
    _fake_sweep(monkeypatch, _records())
    result = _run(tmp_path, "--csv", target)
    assert (result.exit_code, result.stderr) == (2, expected)
    assert not target.exists()


def test_a_new_export_is_one_function_and_one_registry_line(tmp_path, monkeypatch):
    """Registering an export gives `run` and `report` its option, and both write it through
    the same path (write_exports), atomically."""
    import importlib

    import niah.cli

    def write_count(records, path, *, runs, **options):
        names = ", ".join(Path(folder).name for folder, _ in runs)
        Path(path).write_text(f"{len(records)} trials of {names}\n")

    with monkeypatch.context() as m:
        m.setitem(
            report.EXPORTS,
            "count",
            report.Export("--count", "Number of trials.", write_count, example="n.txt"),
        )
        cli = importlib.reload(niah.cli)
        try:
            assert "--count" in invoke(["report", "--help"], app=cli.app).stdout
            reported = _report_with(cli.app, REF, "--count", tmp_path / "report.txt")
            _fake_sweep(m, _records())
            ran = _run(tmp_path, "--count", tmp_path / "run.txt", cli_app=cli.app)
        finally:
            m.undo()
            importlib.reload(niah.cli)
    assert reported.exit_code == 0 and ran.exit_code == 0, reported.output + ran.output
    assert (tmp_path / "report.txt").read_text() == "18 trials of smollm2-cpu-2026-11-27\n"
    assert (tmp_path / "run.txt").read_text() == "18 trials of fake-run\n"
    assert "--count" not in invoke(["report", "--help"], app=niah.cli.app).stdout


def _report_with(cli_app, *args):
    return invoke(["report", *map(str, args)], app=cli_app, catch_exceptions=False)


def test_run_under_mlx_launch_counts_what_the_table_shows(tmp_path, monkeypatch):
    """Under mlx.launch rank 0 prints the merged table of every rank: its header must not
    give rank 0's own count alone ("3 run") above a 6-trial table."""
    import dataclasses

    from niah.run import ranks as distributed

    recs = _records()[:6]
    _fake_sweep(monkeypatch, recs[:3])
    monkeypatch.setattr(distributed, "group_info", lambda: (0, 2))
    monkeypatch.setattr(
        distributed,
        "gather_and_merge",
        lambda result, *, rank, world: dataclasses.replace(result, records=recs),
    )
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    assert header.endswith("· 6 trials in the table from 2 ranks (rank 0: 3 run, 0 already done)")
    assert "Total: 6 trials" in result.stdout


def test_run_and_report_print_the_same_summary(tmp_path, monkeypatch):
    """One summary printer: the run's SUSPECT line names the sample as the report's does."""
    fake = dict(
        _records()[0],
        key="planted",
        context=262144,
        context_tokens=262144,
        prefilled_tokens=262144,
        prefill_s=0.05,
        ttft_s=0.05,
        elapsed_s=0.05,
        device="cuda (NVIDIA H100 80GB HBM3)",
    )
    _fake_sweep(monkeypatch, [fake])
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    suspects = [line for line in result.stdout.splitlines() if line.startswith("SUSPECT")]
    assert len(suspects) == 1
    assert suspects[0].startswith("SUSPECT: context 262144 depth 0 sample 0: prefill at ")


def test_resume_takes_every_export_along(tmp_path, monkeypatch):
    """Exports change what is written, not what is measured: --resume accepts each."""
    folder = tmp_path / "run"
    shutil.copytree(REF, folder)
    _fake_sweep(monkeypatch, _records())
    args = [
        a
        for e in report.EXPORTS.values()
        if e.option != "--parquet"
        for a in (e.option, tmp_path / e.example)
    ]
    result = invoke(["run", "--resume", str(folder), "-q", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "table.md").read_text() == (GOLDEN / "report.md").read_text().replace(
        "### smollm2-cpu-2026-11-27", "### run"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", *(e.example for e in report.EXPORTS.values() if e.option != "--parquet")]
    )


def test_header_names_every_device_a_folder_holds(tmp_path):
    """A folder resumed on another card of the same backend holds both cards' records (the
    identity holds the backend): the header named only the first record's device."""

    def other_card(recs):
        return [
            dict(r, device="cpu (another processor)") if i % 2 else r for i, r in enumerate(recs)
        ]

    folder = _copy_with(tmp_path, "two-cards", other_card)
    result = _report(folder)
    assert result.exit_code == 0, result.output
    first = read_records(REF)[0]["device"]
    assert f"· device {first} + cpu (another processor)\n" in result.stdout


def test_compare_never_pools_the_runs_it_compares(tmp_path):
    """--compare sets runs side by side: the gate and the table exports used to pool them, so
    a candidate at 78% passed --fail-under 0.85 on the baseline's 100% (pooled 89%), and the
    Markdown export printed one cell of both runs ('3/4') under one title."""

    def worse(recs):
        for r in recs[:4]:
            r.update(verdict="FAIL", score=0.0, response="no idea")
        return recs

    other = _copy_with(tmp_path, "other", worse)
    result = _report(REF, other, "--compare", "--fail-under", "0.85")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1] == (
        "other: accuracy 77.8% over 18 trials is below --fail-under 85.0%"
    )
    assert _report(REF, other, "--compare", "--fail-under", "0.75").exit_code == 0
    md = tmp_path / "c.md"
    assert _report(REF, other, "--compare", "--markdown", md).exit_code == 0
    text = md.read_text()
    assert "### smollm2-cpu-2026-11-27" in text and "### other" in text
    assert text.count("Total: 18 trials") == 2 and "/4 [" not in text  # 2 samples a cell
    refused = _report(REF, other, "--compare", "--heatmap", tmp_path / "h.png")
    assert refused.exit_code == 2 and not (tmp_path / "h.png").exists()
    assert (
        refused.output.startswith("error: --heatmap draws one run")
        and len(refused.output.splitlines()) == 1
    )


def test_junit_names_every_trial_apart(tmp_path):
    """A folder of several KV settings (--kv-bits 4,8) holds two trials per (context, depth,
    sample): JUnit named both 'context=1024 depth=0 sample=0', so a CI page keyed on the name
    showed one of them (a FAIL could hide behind a PASS). The name carries the row label the
    table shows (kv4, win..., step... when several), and --compare's runs their config."""

    def kv_axis(recs):
        quantized = [
            dict(r, key=r["key"].replace("-kvfp-", "-kv4-"), kv_bits=4, verdict="FAIL", score=0.0)
            for r in recs
        ]
        return recs + quantized

    folder = _copy_with(tmp_path, "kv", kv_axis)
    out = tmp_path / "j.xml"
    assert _report(folder, "--junit", out).exit_code == 0
    cases = ET.parse(out).getroot().find("testsuite").findall("testcase")
    names = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(cases) == 36 and len(set(names)) == 36
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert len(failed) == 18 and all(n.endswith(" kv4") for n in failed)
    other = _copy_with(tmp_path, "other", lambda recs: recs)
    assert _report(REF, other, "--compare", "--junit", out).exit_code == 0
    cases = ET.parse(out).getroot().find("testsuite").findall("testcase")
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == 36


def test_a_failed_trial_never_reads_as_100_percent(tmp_path):
    """Percentages were rounded to whole numbers, so 215 PASS and 1 FAIL printed 'accuracy
    100%' (and a cell scored 0.996 'FAIL 100%'): a rate short of 1 (or above 0) keeps the
    decimals that tell it from 100% (or 0%)."""

    def many(recs):
        out = [
            dict(r, key=f"{r['key']}-{i}", sample=r["sample"] + 2 * i)
            for i in range(12)
            for r in recs
        ]
        out[0].update(verdict="FAIL", score=0.0, response="no idea")
        return out

    folder = _copy_with(tmp_path, "many", many)
    result = _report(folder)
    assert result.exit_code == 0, result.output
    total = next(line for line in result.stdout.splitlines() if line.startswith("Total:"))
    assert "215 PASS, 1 FAIL; accuracy 99.5%;" in total
    assert report.tables.percent(0.0004) == "0.04%" and report.tables.percent(1.0) == "100%"


def test_fail_under_line_never_reads_a_rate_as_its_threshold():
    """One decimal printed 1999 PASS + 1 FAIL against --fail-under 0.9996 as 'accuracy 100.0%
    ... is below --fail-under 100.0%': the line uses the decimals that tell them apart."""
    from niah.report import fail_under_line

    records = [{"verdict": "PASS", "score": 1.0}] * 1999 + [{"verdict": "FAIL", "score": 0.0}]
    assert fail_under_line(records, 0.9996) == (
        "accuracy 99.95% over 2000 trials is below --fail-under 99.96%"
    )
    assert fail_under_line(records[:10] + records[-1:], 0.95).startswith("accuracy 90.9% over")


def test_headers_name_the_mlx_batching_a_run_was_made_under():
    """A GPU folder made with --repeatable-memory (MLX_MAX_MB_PER_BUFFER=100 in every record)
    says so in `niah report`'s header and in `niah run`'s; a folder without says nothing."""
    from niah.report.summary import run_header

    folder = ROOT / "results" / "reference" / "qwen15-peak-repeatable-h100-2026-12-06"
    first = _report(folder).stdout.splitlines()[0]
    assert first == (
        f"Run: {folder} · model qwen2.5-coder-1.5b-instruct-q4_k_m.gguf · device cuda "
        "(NVIDIA H100 80GB HBM3) · MLX_MAX_MB_PER_BUFFER=100"
    )
    assert _report(REF).stdout.splitlines()[0].endswith("· device cpu (AMD EPYC)")
    records = read_records(folder)
    assert run_header(records, folder=folder, model="m", ran=0, done=24)[1] == (
        "Model: qwen2.5-coder-1.5b-instruct-q4_k_m.gguf · device cuda (NVIDIA H100 80GB HBM3) · "
        "MLX_MAX_MB_PER_BUFFER=100 · 0 run, 24 already done"
    )


def _peak_runs(*folders):
    import subprocess
    import sys

    args = [sys.executable, str(ROOT / "benchmarks" / "peak_repeat.py"), "--runs", *folders]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_peak_repeat_reads_only_folders_that_repeat_one_cell(tmp_path):
    """benchmarks/peak_repeat.py --runs prints a cell's spread only over trials of one
    measurement: a swept depth, step, max-kv or card, or a trial run with prefix reuse on, is
    refused in one line, as is a folder it cannot read, before any cell is printed."""
    reference = ROOT / "results" / "reference"
    ok = _peak_runs(str(reference / "qwen15-peak-repeatable-h100-2026-12-06"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[1] == (
        "cell ctx 4096 kv None: 4 trials, peak 3.084-3.084 GiB, spread 0.0% | median prefill "
        "55412 tok/s, decode 271.5 tok/s"
    )
    swept = reference / "gemma3-270m-curve-h100-2026-11-28"
    refused = _peak_runs(str(swept))
    assert refused.returncode == 1 and refused.stderr == (
        f"{swept}: cell ctx 4096 kv None has more than one depth: pass a folder that repeats "
        "one cell (one depth, step, max-kv and device, --samples N)\n"
    )
    reused = tmp_path / "reused"
    shutil.copytree(reference / "qwen15-peak-repeatable-h100-2026-12-06", reused)
    lines = (reused / "trials.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["prefix_reuse"] = "reused"
    (reused / "trials.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    refused = _peak_runs(str(reused))
    assert refused.returncode == 1 and refused.stderr == (
        f"{reused}: a trial ran with prefix reuse on (prefix_reuse reused): rerun with "
        "--no-prefix-reuse into a new --out\n"
    )
    for field, value in [  # each a different measurement within one cell
        ("prefix_reuse", "fresh"),  # prefix reuse on: its cache held the last trial's prefix
        ("prefill_step", 512),
        ("max_kv_size", 8192),
        ("device", "cuda (NVIDIA H200)"),  # resumed on another card of the same backend
    ]:
        first = json.loads(lines[0])
        first[field] = value
        (reused / "trials.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
        refused = _peak_runs(str(reused))
        assert refused.returncode == 1 and not refused.stdout, field
        assert refused.stderr == (
            f"{reused}: a trial ran with prefix reuse on (prefix_reuse fresh): rerun with "
            "--no-prefix-reuse into a new --out\n"
            if field == "prefix_reuse"
            else f"{reused}: cell ctx 4096 kv None has more than one {field}: pass a folder that "
            "repeats one cell (one depth, step, max-kv and device, --samples N)\n"
        )
    first = json.loads(lines[0])
    first["peak_memory_bytes"] = "abc"  # edited by hand: one line, not a traceback
    (reused / "trials.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    edited = _peak_runs(str(reused))
    assert (
        edited.returncode == 1
        and not edited.stdout
        and edited.stderr
        == (
            f"{reused}: trial {first['key']} has peak_memory_bytes 'abc', not a byte count: pass a "
            "folder niah run wrote\n"
        )
    )
    (reused / "trials.jsonl").write_text("")  # a run folder whose trials have not run
    empty = _peak_runs(
        str(ok_folder := reference / "qwen15-peak-repeatable-h100-2026-12-06"), str(reused)
    )
    assert empty.returncode == 1 and not empty.stdout, empty.stdout  # nothing half printed
    assert empty.stderr == f"{reused}: no trial with a peak memory: run the cell first\n"
    (reused / "config.json").write_text("{not json")
    broken = _peak_runs(str(reused))
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1, broken.stderr
    assert broken.stderr.startswith(f"{reused}: ") and "not a valid niah config" in broken.stderr
    assert ok_folder.is_dir()
    missing = _peak_runs(str(tmp_path / "nothing"))
    assert missing.returncode == 1 and missing.stderr == (
        f"{tmp_path / 'nothing'}: not a niah run folder (no config.json): pass a run folder\n"
    )
