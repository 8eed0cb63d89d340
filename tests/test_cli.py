"""The CLI through typer.testing.CliRunner: a real end-to-end run on SmolLM2 at 1K, every bad
input (one line, exit 2), interrupt and resume, gating and exports."""

import json
import re

import pytest
from conftest import invoke, read_records

from niah.errors import NiahError


def _mask_seconds(text: str) -> str:
    """Seconds vary run to run: replace them by T and re-align columns to two spaces."""
    text = re.sub(
        r"\d+(\.\d+)? s\)", "T s)", re.sub(r"; \d+(\.\d+)? s$", "; T s", text, flags=re.M)
    )
    return "\n".join(re.sub(r" {2,}", "  ", line).rstrip() for line in text.splitlines())


def _run(*args, **kw):
    return invoke(["run", *args], catch_exceptions=False, **kw)


def test_help_is_instant_and_lists_commands():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for cmd in ("run", "report", "doctor", "sdpa"):
        assert cmd in result.output


@pytest.mark.slow
def test_end_to_end_1k_three_depths_all_pass(tmp_path, gguf_path):
    out = tmp_path / "res"
    result = _run(
        "--context",
        "1k",
        "--depth",
        "0,0.5,1",
        "--out",
        str(out),
        "--junit",
        str(tmp_path / "j.xml"),
        "--csv",
        str(tmp_path / "t.csv"),
        "--fail-under",
        "1.0",
    )
    assert result.exit_code == 0, result.output
    folder = next(out.iterdir())
    lines = _mask_seconds(result.stdout).splitlines()
    assert lines[0] == f"Run folder: {folder}"
    assert re.fullmatch(
        r"Model: SmolLM2-135M-Instruct\.Q4_1\.gguf · device cpu \(.+\) · 3 run, "
        r"0 already done",
        lines[1],
    ), lines[1]
    # no TTY (CI logs): one plain progress line per trial on stderr, in the order they ran
    loaded, *progress = result.stderr.splitlines()
    assert re.fullmatch(r"loaded SmolLM2-135M-Instruct\.Q4_1\.gguf in \d+\.\d s \(.+\)", loaded), (
        loaded
    )
    assert [
        re.sub(r"\(\d+\.\d s\)", "(T s)", line) for line in progress if ": prefill " not in line
    ] == [  # a trial past 10 s on a busy CPU adds prefill lines
        f"niah: trial {i}/3: context 1K depth {d} sample 0: PASS (T s)"
        for i, d in ((1, "0"), (2, "0.5"), (3, "1"))
    ]
    assert lines[2:] == [
        "",
        "Context  Depth 0%  Depth 50%  Depth 100%  Accuracy",
        "1K  PASS (T s)  PASS (T s)  PASS (T s)  100%",
        "",
        "Total: 3 trials, 3 PASS, 0 FAIL; accuracy 100%; T s",
    ]
    recs = read_records(folder)
    required = [
        "model",
        "context",
        "context_tokens",
        "depth",
        "needle_index",
        "needle_depth",
        "value",
        "response",
        "verdict",
        "prefill_s",
        "prefill_tps",
        "ttft_s",
        "decode_tps",
        "peak_memory_bytes",
        "sdpa_route",
        "mlx_version",
        "device",
        "config_hash",
        "seed",
        "sample",
    ]
    for r in recs:
        assert all(k in r for k in required)
        assert r["context_tokens"] == 1024 and r["verdict"] == "PASS" and r["sdpa_route"] == "stock"
        assert r["peak_memory_bytes"] > 0 and r["prefill_s"] > 0
    # where the time went: one "phases" event, its trial loop holding the trials' own seconds
    events = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    (event,) = [e for e in events if e["event"] == "phases"]
    phases = event["seconds"]
    assert event["finished"] is True
    assert set(phases) == {"startup", "metadata", "imports", "load", "prepare", "trials"}
    assert phases["load"] > 0 and phases["imports"] >= 0 and phases["metadata"] >= 0
    assert phases["trials"] >= sum(r["elapsed_s"] for r in recs) - 0.01
    (load,) = [e for e in events if e["event"] == "load"]
    assert load["seconds"] <= phases["load"] + 0.01
    # the same command again does nothing new
    again = _run("--context", "1k", "--depth", "0,0.5,1", "--out", str(out), "-q")
    assert "0 run, 3 already done" in again.stdout
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert (tmp_path / "t.csv").read_text().count("\n") == 4


BAD = [
    (
        ["--context", "128q"],
        "error: bad context '128q': use a positive token count like 8000, 4k or 1m",
    ),
    (
        ["--context", "0"],
        "error: bad context '0': use a positive whole token count like 8000, 4k or 1m",
    ),
    (
        ["--context", "-4k"],
        "error: bad context '-4k': use a positive token count like 8000, 4k or 1m",
    ),
    (["--depth", "1.5"], "error: depth 1.5 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
    (["--depth", "0:1"], "error: bad depth range '0:1': use start:stop:step like 0:1:0.1"),
    (["--samples", "0"], "error: --samples 0 is not allowed: use 1 or more"),
    (
        ["--needle", "no value here"],
        "error: the needle template has no {value} placeholder: write it like 'The secret passkey is {value}.'",
    ),
    (
        ["--model", "/nope/model.gguf"],
        "error: GGUF file '/nope/model.gguf' not found: check the path",
    ),
    (
        ["--model", "./missing-folder"],
        "error: model path './missing-folder' does not exist: check the path, or give a hub id like mlx-community/SmolLM2-135M-Instruct-8bit",
    ),
    (
        ["--haystack", "/nope/hay.txt"],
        "error: haystack path '/nope/hay.txt' does not exist: give a .txt file, a folder of them, prose or noise",
    ),
    (["--sdpa", "fast"], "error: unknown --sdpa 'fast': use one of stock, chunked, auto"),
    (["--fail-under", "2"], "error: --fail-under 2 is outside [0, 1]: use a fraction like 0.9"),
    (["--warm-up", "fast"], "error: unknown warm-up 'fast': use one of auto, off, once, shapes"),
    (["--warm-up", ""], "error: unknown warm-up '': use one of auto, off, once, shapes"),
    (["--kv-bits", "7"], "error: bad --kv-bits value '7': use 2, 3, 4, 5, 6, 8 or none"),
    (
        ["--depth", "0:1:1e-9"],
        "error: depth range '0:1:1e-9' gives more than the 1001 values allowed: use a larger step",
    ),
    (
        ["--depth", "0:inf:0.1"],
        "error: bad depth range '0:inf:0.1': start, stop and step must be finite numbers, like 0:1:0.1",
    ),
    (["--depth", "nan"], "error: bad depth 'nan': use a number between 0 and 1 like 0.5"),
    (
        ["--needle", "{value} and {other}"],
        "error: the needle template '{value} and {other}' has the placeholder {other}: only {value} is filled in; write literal braces as {{ and }} and the value as {value}",
    ),
    (
        ["--needle", "{value} {}"],
        "error: the needle template '{value} {}' has the placeholder {}: only {value} is filled in; write literal braces as {{ and }} and the value as {value}",
    ),
    (
        ["--needle", "brace { {value}"],
        "error: the needle template 'brace { {value}' has an unpaired brace: write literal braces as {{ and }} and the value as {value}",
    ),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2(args, message, tmp_path):
    result = _run(*args, "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""


@pytest.mark.slow  # loads the model once per case
def test_model_dependent_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cases = [
        (
            ["--model", "mlx-community/not-a-real-model-xyz"],
            "error: model 'mlx-community/not-a-real-model-xyz' is not in the local cache and the hub is offline: download it once online, or unset HF_HUB_OFFLINE",
        ),
        (
            ["--context", "50"],
            "error: context 50 is too short for the template, needle and question (93 tokens at least): use a longer --context",
        ),
    ]
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\xfa not utf8")
    cases += [
        (
            ["--haystack", str(empty)],
            f"error: haystack {str(empty)!r} is empty: give a file with text or use --haystack prose",
        ),
        (
            ["--haystack", str(binary)],
            f"error: haystack file {str(binary)!r} is not UTF-8 text: convert it (iconv -t utf-8)",
        ),
    ]
    for args, message in cases:
        extra = [] if "--context" in args else ["--context", "1k"]
        result = _run(*args, *extra, "--out", str(tmp_path / "o"), "--quiet")
        assert (result.exit_code, result.stderr, result.stdout) == (2, message + "\n", ""), args
        assert not (tmp_path / "o").exists(), (args, list((tmp_path / "o").rglob("*")))


@pytest.mark.slow
def test_interrupt_keeps_finished_trials_and_resume_finishes(tmp_path, monkeypatch):
    from niah.model import ModelSession

    original = ModelSession.generate
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(ModelSession, "generate", flaky)
    args = [
        "--context",
        "512",
        "--depth",
        "0,0.5,1",
        "--out",
        str(tmp_path),
        "-q",
        "--max-tokens",
        "12",
    ]
    result = _run(*args)
    assert result.exit_code == 130
    assert result.stderr.startswith("interrupted: finished trials are saved")
    folder = next(tmp_path.iterdir())
    assert len((folder / "trials.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(ModelSession, "generate", original)
    # a corrupt line (a crash mid-write) is skipped with a warning, the rest kept
    with open(folder / "trials.jsonl", "a") as fh:
        fh.write('{"key": "c512-d0.5-s0-kvfp-mall-p2048", "verd')
    result = invoke(["run", "--resume", str(folder), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 run, 1 already done" in result.stdout
    # read several times during the run, reported once, without file:line or source text
    assert result.stderr == (
        f"warning: skipped 1 corrupt line(s) of {folder / 'trials.jsonl'} (line 2: not JSON)\n"
    )
    from niah.store import latest_by_key, read_trials

    with pytest.warns(UserWarning):
        recs = read_trials(folder)
    assert len(latest_by_key(recs)) == 3 and len(recs) == 3  # nothing lost, nothing duplicated


def test_resume_of_missing_folder(tmp_path):
    result = _run("--resume", str(tmp_path / "none"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: {str(tmp_path / 'none')!r} is not a niah run folder (no config.json): give a folder made by niah run\n"
    )


def test_version():
    from niah import __version__

    result = invoke(["--version"])
    assert (result.exit_code, result.stdout) == (0, f"niah {__version__}\n")
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


@pytest.mark.parametrize(
    "args,flags",
    [
        ([], ["--version", "--help"]),
        (["run"], ["--refuse-beyond-trained", "--prefix-reuse", "--quiet", "--help"]),
        (["report"], ["--compare", "--help"]),
        (["sdpa", "verify"], ["--quick", "--long", "--help"]),
    ],
)
def test_boolean_flags_show_no_type(args, flags):
    result = invoke([*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if any(f in line for f in flags)]
    assert len(rows) >= len(flags) and not any("<bool>" in r or "BOOLEAN" in r for r in rows), rows
    assert "<str>" in invoke(["run", "--help"], env={"COLUMNS": "200"}).stdout  # types stay


@pytest.fixture
def no_sweep(monkeypatch):
    """Output checks must happen before the sweep starts: reaching it fails the test."""
    import niah.run

    def refuse(*a, **kw):
        raise AssertionError("the sweep started before the output paths were checked")

    monkeypatch.setattr(niah.run, "run_sweep", refuse)


def test_output_paths_are_checked_before_the_sweep(tmp_path, no_sweep):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "adir").mkdir()
    out = str(tmp_path / "res")
    cases = [
        (["--out", ""], "error: --out is empty: give a folder for run folders, like --out results"),
        (
            ["--out", "  "],
            "error: --out is empty: give a folder for run folders, like --out results",
        ),
        (
            ["--out", str(blocker / "sub")],
            f"error: cannot write to output folder {str(blocker / 'sub')!r} ({str(blocker)!r} is a file): choose a writable --out",
        ),
        (
            ["--out", out, "--junit", str(tmp_path / "typo" / "niah.xml")],
            f"error: cannot write --junit {str(tmp_path / 'typo' / 'niah.xml')!r}: folder {str(tmp_path / 'typo')!r} does not exist; create it first",
        ),
        (
            ["--out", out, "--csv", str(tmp_path / "typo" / "t.csv")],
            f"error: cannot write --csv {str(tmp_path / 'typo' / 't.csv')!r}: folder {str(tmp_path / 'typo')!r} does not exist; create it first",
        ),
        (
            ["--out", out, "--junit", str(tmp_path / "adir")],
            f"error: --junit {str(tmp_path / 'adir')!r} is a folder: give a file name like niah.xml",
        ),
        (
            ["--out", out, "--csv", str(tmp_path / "adir")],
            f"error: --csv {str(tmp_path / 'adir')!r} is a folder: give a file name like niah.csv",
        ),
    ]
    for args, message in cases:
        result = _run("--context", "1k", *args)
        assert (result.exit_code, result.stderr, result.stdout) == (2, message + "\n", ""), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "file"]  # nothing created


def test_resume_checks_report_paths_before_the_sweep(tmp_path, no_sweep):
    from niah.config import RunConfig
    from niah.store import prepare_folder

    prepare_folder(tmp_path / "run", RunConfig(model="default"))
    result = _run("--resume", str(tmp_path / "run"), "--junit", str(tmp_path / "no" / "j.xml"))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot write --junit {str(tmp_path / 'no' / 'j.xml')!r}: folder "
        f"{str(tmp_path / 'no')!r} does not exist; create it first\n"
    )


@pytest.mark.parametrize("value", ["2", "-0.5", "1.01"])
def test_report_fail_under_range(value):
    from pathlib import Path

    ref = (
        Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"
    )
    result = invoke(["report", str(ref), "--fail-under", value])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: --fail-under {float(value):g} is outside [0, 1]: use a fraction like 0.9\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    "text,reason",
    [
        ("[]", "not an object with a model): re-run niah run into a new folder"),
        ("null", "not an object with a model): re-run niah run into a new folder"),
        (
            '{"model": "default", "contexts": 5}',
            "config field 'contexts' is 5: expected a non-empty list of positive whole numbers): re-run niah run",
        ),
        (
            '{"model": "default", "depths": ["half"]}',
            "config field 'depths' is [\"half\"]: expected a non-empty list of numbers in [0, 1]): re-run niah run",
        ),
        (
            "{not json",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)): re-run niah run",
        ),
    ],
)
def test_malformed_config_json_is_one_line(tmp_path, text, reason):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    (folder / "trials.jsonl").write_text("")
    message = f"error: {str(folder / 'config.json')!r} is not a valid niah config ({reason}\n"
    for args in (["run", "--resume", str(folder), "-q"], ["report", str(folder)]):
        result = invoke(args)
        assert (result.exit_code, result.stderr, result.stdout) == (2, message, ""), args


def test_trained_length_counts_the_decoded_tokens():
    from niah.config import RunConfig
    from niah.run import check_contexts

    assert check_contexts(RunConfig(model="m", contexts=(8160,)), 8192, max_tokens=32) == []
    # by default a context past the trained length runs (marked); a note says so
    assert check_contexts(RunConfig(model="m", contexts=(8161,)), 8192, max_tokens=32) == [
        "context 8161 plus up to 32 answer tokens is beyond the trained length 8192 (run, marked "
        "in the reports)"
    ]
    assert (
        check_contexts(
            RunConfig(model="m", contexts=(8160,), refuse_beyond_trained=True), 8192, max_tokens=32
        )
        == []
    )
    with pytest.raises(NiahError) as e:
        check_contexts(
            RunConfig(model="m", contexts=(1024, 8161), refuse_beyond_trained=True),
            8192,
            max_tokens=32,
        )
    assert str(e.value) == (
        "context 8161 plus up to 32 answer tokens is beyond the model's trained "
        "length of 8192 tokens (--refuse-beyond-trained): use a shorter "
        "--context, or drop --refuse-beyond-trained to run it marked"
    )


def test_refused_run_removes_only_what_it_created(tmp_path, monkeypatch):
    """The runner writes config.json, then refuses (as for a too-short context): the run
    folder and the --out folders this call made go; folders that existed before stay."""
    import niah.run
    from niah import store

    def prepare_then_refuse(cfg, **kw):
        store.prepare_folder(store.run_folder(cfg, "model", config_hash=cfg.hash()), cfg)
        raise NiahError("context 50 is too short")

    monkeypatch.setattr(niah.run, "run_sweep", prepare_then_refuse)
    (tmp_path / "keep").mkdir()
    (tmp_path / "used" / "old-run").mkdir(parents=True)
    for out in ("keep/new/deeper", "used", "fresh"):
        result = _run("--context", "1k", "--out", str(tmp_path / out), "-q")
        assert (result.exit_code, result.stderr) == (2, "error: context 50 is too short\n")
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["keep", "used", "used/old-run"]


def _folder_records(folder):
    return read_records(folder)


@pytest.mark.slow
def test_resume_runs_exactly_the_cells_each_grid_asked(tmp_path):
    """Issue 20 item 3: -c 256 -d 0, then -c 512 -d 1, then --resume also ran 512 at depth 0
    and 256 at depth 1 (the cross product of the merged axes)."""
    common = ["--out", str(tmp_path), "-q", "--max-tokens", "12"]
    assert _run("-c", "256", "-d", "0", *common).exit_code == 0
    second = _run("-c", "512", "-d", "1", *common)
    assert second.exit_code == 0, second.output
    (folder,) = tmp_path.iterdir()
    (folder / "trials.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _folder_records(folder) if r["context"] == 256)
    )
    resumed = invoke(["run", "--resume", str(folder), "-q"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert "1 run, 1 already done" in resumed.stdout
    assert sorted((r["context"], r["depth"]) for r in _folder_records(folder)) == [
        (256, 0),
        (512, 1),
    ]
    assert "Total: 2 trials" in resumed.stdout


@pytest.mark.slow
def test_prefill_step_beyond_the_context_is_capped_in_the_preflight(tmp_path):
    """Issue 20 item 4: --prefill-step 1000000000 on a 256-token prompt was SKIP ('needs
    about 17166.9 GiB'); the step is capped at the context, so the trial runs. The record
    carries every field the committed records of the same niah version carry."""
    result = _run(
        "-c",
        "256",
        "-d",
        "0.5",
        "--prefill-step",
        "1000000000",
        "--out",
        str(tmp_path),
        "-q",
        "--max-tokens",
        "12",
    )
    assert result.exit_code == 0, result.output
    ((rec,),) = [_folder_records(f) for f in tmp_path.iterdir()]
    assert rec["verdict"] in ("PASS", "FAIL", "NULL"), rec["error"]
    assert rec["estimated_memory_bytes"] < 8 * 2**30
    from pathlib import Path

    ref = Path(__file__).resolve().parent.parent / "results" / "reference"
    keys = set(read_records(ref / "qwen15-task-multi-key-h100-2026-11-28")[0])
    assert set(rec) == keys
