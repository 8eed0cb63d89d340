"""Defects found by a hostile pass over the CLI (bad environment, damaged run folders, answers
crafted to fool the scorer): each case is one line and exit 2, or a true verdict."""

import pytest
from conftest import invoke, read_records


@pytest.mark.parametrize(
    "name,value,message",
    [
        (
            "NIAH_SDPA_CHUNK_THRESHOLD",
            "abc",
            "NIAH_SDPA_CHUNK_THRESHOLD='abc' is not a whole number: set it like NIAH_SDPA_CHUNK_THRESHOLD=65536",
        ),
        (
            "NIAH_SDPA_CHUNK_SIZE",
            "0",
            "NIAH_SDPA_CHUNK_SIZE='0' must be positive: set it like NIAH_SDPA_CHUNK_SIZE=65536",
        ),
        (
            "NIAH_SDPA_FLOP_BUDGET",
            "-1",
            "NIAH_SDPA_FLOP_BUDGET='-1' must be positive: set it like NIAH_SDPA_FLOP_BUDGET=1e11",
        ),
    ],
)
def test_bad_sdpa_environment_is_one_line(tmp_path, monkeypatch, name, value, message):
    """A bad NIAH_SDPA_* value was a ValueError traceback from inside the sweep."""
    monkeypatch.setenv(name, value)
    result = invoke(["run", "--context", "256", "--out", str(tmp_path / "o"), "-q"])
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")
    assert not (tmp_path / "o").exists()


def _copy_reference(tmp_path):
    import shutil
    from pathlib import Path

    ref = (
        Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"
    )
    folder = tmp_path / "run"
    shutil.copytree(ref, folder)
    return folder


@pytest.mark.parametrize(
    "field,value",
    [
        ("elapsed_s", '"x"'),
        ("device", "5"),
        ("prefill_s", '"1.5"'),
        ("decode_s", "[]"),
        ("n_heads", '"9"'),
        ("elapsed_s", "NaN"),
        ("context_tokens", "Infinity"),
        ("response", "{}"),
        ("generated_tokens", '"8"'),
    ],
)
def test_record_with_a_malformed_field_is_skipped(tmp_path, field, value):
    """A record whose measured field has the wrong type was a traceback (or 'nan s') in the report:
    it is skipped with the corrupt-line warning, the other records are reported."""
    import json
    import re

    folder = _copy_reference(tmp_path)
    path = folder / "trials.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    lines[0] = re.sub(rf'"{field}": ("[^"]*"|[^,}}]*)', f'"{field}": {value}', json.dumps(rec))
    assert lines[0] != json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    result = invoke(["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: skipped 1 corrupt line(s) of {path} "
        f"(line 1: {field} is not {'text' if field in ('device', 'response') else 'a finite number'})\n"
    )
    assert "Total: 17 trials, 17 PASS, 0 FAIL" in result.stdout


def test_trials_file_that_is_a_folder_is_one_line(tmp_path):
    folder = _copy_reference(tmp_path)
    (folder / "trials.rank1.jsonl").mkdir()
    result = invoke(["report", str(folder)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: cannot read {str(folder / 'trials.rank1.jsonl')!r} (Is a directory): "
        "move it out of the run folder\n"
    )


@pytest.mark.parametrize(
    "answer,verdict",
    [
        ("1234567.5", "FAIL"),  # a decimal is another number, not the passkey
        ("The passkey is 1234567.89.", "FAIL"),
        ("0.1234567", "FAIL"),
        ("1,234,567.5", "FAIL"),
        ("The passkey is 1234567.", "PASS"),  # a sentence's full stop is not a decimal point
        ("1234567. Done.", "PASS"),
        ("1,234,567.", "PASS"),
    ],
)
def test_a_decimal_number_is_not_the_whole_number(answer, verdict):
    from niah.scoring import judge

    assert judge(answer, "1234567").verdict == verdict


@pytest.mark.parametrize("depth", [",,,", " , "])
def test_depth_list_of_only_commas_is_one_line(tmp_path, depth):
    """`--depth ,,,` ran a sweep of no trials and exited 0 ("Total: 0 trials")."""
    result = invoke(["run", "--context", "256", "--depth", depth, "--out", str(tmp_path / "o")])
    assert (result.exit_code, result.stdout) == (2, "")
    assert (
        result.stderr == "error: empty --depth: give depths like 0,0.5,1 or a range like 0:1:0.1\n"
    )


def test_negative_zero_depth_is_depth_zero():
    """-0 parsed as -0.0: its trial key (d-0) differed from depth 0's (d0), so in a folder that
    already held depth 0 the grid union kept 0.0 and the run ran and reported 0 trials."""
    from niah.config import RunConfig, parse_depths
    from niah.run.grid import build_grid

    for text in ("-0", "-0.0", "-0,1"):
        depths = parse_depths(text)
        assert str(depths[0]) == "0.0", text
    assert (
        build_grid(RunConfig(model="m", contexts=(256,), depths=parse_depths("-0")))[0].key
        == build_grid(RunConfig(model="m", contexts=(256,), depths=(0.0,)))[0].key
    )


def _reference():
    from pathlib import Path

    return str(
        Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"
    )


@pytest.mark.parametrize("name", ["heat.txt", "heat", "heat.csv"])
def test_heatmap_of_an_unknown_image_type_is_one_line(tmp_path, name):
    """--heatmap x.txt printed the table, then matplotlib's ValueError traceback (exit 1)."""
    path = tmp_path / name
    result = invoke(["report", _reference(), "--heatmap", str(path)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: --heatmap {str(path)!r} is not a .png, .svg or .pdf file: "
        "give a name like heatmap.png\n"
    )
    assert not path.exists()


@pytest.mark.parametrize("value", ["-1", "0", "1.5", "nan"])
def test_effective_threshold_outside_0_1_is_one_line(value):
    """--effective-threshold -1 or nan printed 'Effective context (>= nan% ...)'."""
    result = invoke(["report", _reference(), "--effective-threshold", value])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: --effective-threshold {float(value):g} is outside (0, 1]: "
        "use a fraction like 0.85\n"
    )


@pytest.mark.parametrize("text", ["0.1234567,0.1234568", "0.5,0.50000001", "0.3333333,0.33333333"])
def test_depths_that_share_a_trial_key_are_one_depth(text):
    """Trial keys hold a depth to 6 significant digits: two depths equal to 6 digits were two
    trials under one key, and the report showed one needle twice as 2 samples of one cell."""
    from niah.config import RunConfig, parse_depths
    from niah.run.grid import build_grid

    depths = parse_depths(text)
    keys = [s.key for s in build_grid(RunConfig(model="m", contexts=(256,), depths=depths))]
    assert len(keys) == len(set(keys)) == len(depths) == 1
    assert f"{depths[0]:.6g}" == f"{float(text.split(',')[0]):.6g}"


def test_grid_union_keeps_one_depth_per_trial_key(tmp_path):
    """A folder written with an unrounded depth (0.333333333333 from a 0:1:1/3 range) merged
    with the same depth as parsed now (0.333333) must not hold two depths of one key."""
    from niah.config import RunConfig
    from niah.run.grid import build_grid
    from niah.store import load_config, prepare_folder

    prepare_folder(tmp_path, RunConfig(model="m", depths=(0.0, 0.333333333333)))
    prepare_folder(tmp_path, RunConfig(model="m", depths=(0.333333, 1.0)))
    merged = load_config(tmp_path)
    assert merged.depths == (0.0, 0.333333333333, 1.0)
    keys = [s.key for s in build_grid(merged)]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    "form, read_as_value",
    [
        ("{a},{b},{c}", True),
        ("{a} {b} {c}", True),
        ("{a}\u00a0{b}\u00a0{c}", True),
        ("{a}, {b}, {c}", False),
    ],
)
def test_value_in_the_haystack_in_digit_groups_is_found(
    gguf_tokenizer, tmp_path, form, read_as_value
):
    """The scorer reads "1,234,567" and "1 234 567" as 1234567, but the value check looked
    for the plain digits only: a haystack holding the value in groups kept it, and a model
    copying it from the haystack would PASS. "1, 234, 567" is a list of three numbers: neither
    the scorer nor the value check may read it as the value."""
    from niah.haystack import PromptBuilder
    from niah.scoring import judge

    value = "3237596"
    grouped = form.format(a=value[0], b=value[1:4], c=value[4:])
    path = tmp_path / "hay.txt"
    path.write_text(f"A line. The total was {grouped} units. Another line.\n")
    builder = PromptBuilder(gguf_tokenizer, source=str(path))
    assert builder.value_occurs(value, context=1024) == (judge(grouped, value).verdict == "PASS")
    assert builder.value_occurs(value, context=1024) is read_as_value


def _default_configs():
    from niah import tasks
    from niah.config import RunConfig

    for task in tasks.TASKS:
        for kind in tasks.SPECS[task].value_kinds:
            for n in [None] if not tasks.SPECS[task].variable else [2, 4, 16]:
                if task == "multi-key" and n == 16:
                    continue  # keys.txt holds fewer keys
                fields = tasks.resolve(
                    task=task,
                    needles=n,
                    needle=None,
                    question=None,
                    answer_prefix=None,
                    max_tokens=None,
                    value_kind=kind,
                )
                yield RunConfig(model="m", value_kind=kind, **fields)


def test_default_answer_length_holds_the_answer(gguf_tokenizer):
    """A UUID is 33 tokens in SmolLM2's tokenizer and the single task's default --max-tokens
    was 32: every uuid trial was cut one character short and recorded as FAIL."""
    from niah import tasks
    from niah.haystack import PromptBuilder

    builder = PromptBuilder(gguf_tokenizer)
    short = [
        (c.task, c.value_kind, c.needles, c.max_tokens, tasks.answer_minimum(builder, c))
        for c in _default_configs()
        if tasks.answer_minimum(builder, c) > c.max_tokens
    ]
    assert short == []


@pytest.mark.slow
def test_max_tokens_that_cannot_hold_the_answer_is_one_line(tmp_path):
    """--max-tokens 2 with a 7-digit value (8 tokens with its space) recorded a FAIL the model
    could never have avoided."""
    result = invoke(
        [
            "run",
            "--context",
            "256",
            "--depth",
            "0.5",
            "--max-tokens",
            "2",
            "--out",
            str(tmp_path / "o"),
            "-q",
        ]
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --max-tokens 2 cannot hold the answer (8 tokens for the "
        "number value asked): use --max-tokens 8 or more, with room to spare\n"
    )
    assert not (tmp_path / "o").exists()


def test_run_log_that_cannot_be_written_is_one_line(tmp_path):
    """runs.jsonl as a folder (or unwritable) was an IsADirectoryError traceback."""
    from niah.errors import NiahError
    from niah.store import append_run_log

    (tmp_path / "runs.jsonl").mkdir()
    with pytest.raises(NiahError) as e:
        append_run_log(tmp_path, {"event": "start"})
    assert str(e.value) == (
        f"cannot write {str(tmp_path / 'runs.jsonl')!r} (Is a directory): "
        "move it out of the run folder or choose a writable --out"
    )


# ---- issue 20: refused before anything runs (one line, exit 2, nothing left behind) ----------


@pytest.fixture
def no_sweep(monkeypatch):
    """These inputs must be refused before the sweep: reaching it fails the test."""
    import niah.run

    def refuse(*a, **kw):
        raise AssertionError("the sweep started with an input that should have been refused")

    monkeypatch.setattr(niah.run, "run_sweep", refuse)


ROPE_RANGE = "FACTOR must be at most 64 (a finite number above 1, e.g. yarn:4)"
REFUSED = [
    (
        ["--haystack", ""],
        "--haystack is empty: give prose, noise, zh, ja, log, pg-essays, or a .txt file or folder",
    ),
    (
        ["--haystack", " "],
        "--haystack is empty: give prose, noise, zh, ja, log, pg-essays, or a .txt file or folder",
    ),
    (
        ["--model", ""],
        "--model is empty: give a hub id, a model folder or a .gguf file, or leave --model out for the embedded model",
    ),
    (["--kv-bits", ""], "empty --kv-bits: give one or more values like 4,8"),
    (["--kv-bits", "0"], "bad --kv-bits value '0': use 2, 3, 4, 5, 6, 8 or none"),
    (["--max-kv-size", ""], "empty --max-kv-size: give one or more values like 4096,8192"),
    (["--prefill-step", ""], "empty --prefill-step: give one or more values like 1024,2048"),
    (
        ["--kv-bits", "4", "--kv-group-size", "0"],
        "--kv-group-size 0 is not supported: use 32, 64, 128",
    ),
    (
        ["--kv-bits", "4", "--kv-group-size", "7"],
        "--kv-group-size 7 is not supported: use 32, 64, 128",
    ),
    (
        ["--kv-bits", "4", "--kv-group-size", "33"],
        "--kv-group-size 33 is not supported: use 32, 64, 128",
    ),
    (
        ["--kv-bits", "4", "--kv-group-size", "-1"],
        "--kv-group-size -1 is not supported: use 32, 64, 128",
    ),
    (
        ["--kv-bits", "4", "--kv-group-size", "256"],
        "--kv-group-size 256 is not supported: use 32, 64, 128",
    ),
    (["--rope-scaling", "yarn:inf"], f"bad --rope-scaling 'yarn:inf': {ROPE_RANGE}"),
    (["--rope-scaling", "linear:1e308"], f"bad --rope-scaling 'linear:1e308': {ROPE_RANGE}"),
    (["--rope-scaling", "yarn:65"], f"bad --rope-scaling 'yarn:65': {ROPE_RANGE}"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_empty_and_unsupported_values_are_refused_before_the_run(tmp_path, no_sweep, args, message):
    out = tmp_path / "out"
    result = invoke(["run", *args, "--out", str(out)], catch_exceptions=False)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")
    assert not out.exists()


def test_kv_group_size_that_mx_quantize_accepts_is_taken():
    from niah.config import RunConfig

    for size in (32, 64, 128):
        assert RunConfig(model="m", kv_bits=(4,), kv_group_size=size).kv_group_size == size


def test_kv_group_size_must_divide_the_head_size():
    from niah.errors import NiahError
    from niah.parse import check_kv_group_size

    check_kv_group_size(64, head_dim=64)
    with pytest.raises(NiahError) as e:
        check_kv_group_size(128, head_dim=64)
    assert (
        str(e.value) == "--kv-group-size 128 does not divide the model's head size 64: use 32 or 64"
    )


def test_unreachable_hub_without_hf_hub_offline_gives_the_right_advice(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: the advice is not to unset it."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*a, **kw):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub"
        )

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    out = tmp_path / "out"
    result = invoke(["run", "-m", "mlx-community/not-a-real-model-xyz", "-o", str(out), "-q"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: model 'mlx-community/not-a-real-model-xyz' is not in the local cache and the hub "
        "cannot be reached: connect to the network once to download it, or give a local model "
        "folder or .gguf file\n"
    )
    assert not out.exists()


def test_run_help_is_readable_at_80_columns():
    for args in (["run"], ["report"], ["doctor"], ["convert"], []):
        result = invoke([*args, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0
        assert "…" not in result.stdout, (args, result.stdout)
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
    text = invoke(["run", "--help"], env={"COLUMNS": "80"}).stdout
    assert "--refuse-beyond-trained" in text and "SmolLM2-135M-Instruct" in text
    assert "--allow-beyond-trained" not in text  # the old flag: accepted, a no-op, hidden
    assert "1 accuracy below --fail-under, or no trial reached a" in text  # the exit codes


# ---- issue 20: what the terminal says after a run, with the sweep faked ----------------------


def _reference_record(**changes) -> dict:
    from pathlib import Path

    ref = (
        Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"
    )
    record = read_records(ref)[0]
    return {**record, **changes}


def _fake_sweep(monkeypatch, tmp_path, records, *, skipped_done=0, log=()):
    import json

    import niah.run
    from niah.run import RunResult

    folder = tmp_path / "out" / "run"
    folder.mkdir(parents=True)
    (folder / "runs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))

    def sweep(cfg, **kw):
        return RunResult(
            folder=folder,
            config=cfg,
            records=records,
            ran=len(records) - skipped_done,
            skipped_done=skipped_done,
        )

    monkeypatch.setattr(niah.run, "run_sweep", sweep)
    return folder


def test_a_run_where_no_trial_reached_a_verdict_says_why_and_exits_1(tmp_path, monkeypatch):
    skip = "skipped: needs about 17166.9 GiB (weights 0.5, KV 0.0, attention 0.0)"
    records = [_reference_record(verdict="SKIP", error=skip, depth=d) for d in (0.0, 0.5)]
    records.append(
        _reference_record(verdict="ERROR", depth=1.0, error="ValueError: [quantize] group size 7")
    )
    _fake_sweep(monkeypatch, tmp_path, records)
    result = invoke(["run", "-o", str(tmp_path / "out"), "-q", "-c", "1k"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-3:] == [
        "error: no trial reached a verdict (2 SKIP, 1 ERROR); the first reasons:",
        f"  context 1K depth 0: {skip}",
        "  context 1K depth 1: ValueError: [quantize] group size 7",
    ]
    # one PASS among them: a result, exit 0
    records[1] = _reference_record(depth=0.5)
    assert invoke(["run", "-o", str(tmp_path / "out"), "-q", "-c", "1k"]).exit_code == 0


@pytest.mark.parametrize(
    "logged,mode,warned",
    [
        ([{"event": "warm-up", "mode": "shapes"}], "off", "ran after warm-up shapes, not off"),
        ([{"event": "warm-up", "mode": "once"}], "shapes", "ran after warm-up once, not shapes"),
        ([], "once", "ran after warm-up off, not once"),
        ([{"event": "warm-up", "mode": "once"}], "once", None),
        ([], "off", None),
    ],
)
def test_kept_trials_timed_after_another_warm_up_are_named(
    tmp_path, monkeypatch, logged, mode, warned
):
    folder = _fake_sweep(
        monkeypatch,
        tmp_path,
        [_reference_record()],
        skipped_done=1,
        log=[{"event": "start"}, *logged],
    )
    result = invoke(["run", "-o", str(tmp_path / "out"), "-q", "-c", "1k", "--warm-up", mode])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "warm-up" in line]
    if warned is None:
        assert lines == []
    else:
        assert lines == [
            f"warning: 1 trial kept from {folder} {warned}: --warm-up does not rerun "
            f"finished trials; use another --out to time every trial with --warm-up {mode}"
        ]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["-m", ""],
            "--model is empty: give a hub id, a model folder or a .gguf file, or leave --model out for the embedded model",
        ),
        (["-c", ""], "--context is empty: give a context to size, like --context 128k"),
    ],
)
def test_doctor_refuses_empty_model_and_context(args, message):
    result = invoke(["doctor", *args])
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")


@pytest.mark.slow  # loads the model: the head size is known only then
def test_kv_group_size_that_does_not_divide_the_head_is_refused_after_loading(tmp_path, gguf_path):
    out = tmp_path / "out"
    result = invoke(
        [
            "run",
            "-c",
            "256",
            "-d",
            "0",
            "--kv-bits",
            "4",
            "--kv-group-size",
            "128",
            "-o",
            str(out),
            "-q",
        ]
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --kv-group-size 128 does not divide the model's head size 64: use 32 or 64\n"
    )
    assert not out.exists()
