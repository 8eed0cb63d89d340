"""A result belongs to exactly one configuration: config hash coverage, foreign records,
write-order, grid union, --resume checks, the folder lock, retried SKIPs, malformed records
and configs, and report pooling. Each test goes through the CLI (CliRunner) where a user
would, and each failed on the code before its fix."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import invoke, read_records

from niah import store

ROOT = Path(__file__).resolve().parent.parent
CPU_REF = ROOT / "results" / "reference" / "smollm2-cpu-2026-11-27"
H100_REF = ROOT / "results" / "reference" / "smollm2-h100-curve-2026-11-27"
SMALL = ["--context", "256", "--max-tokens", "8", "-q"]


def _cli(*args):
    return invoke([*map(str, args)], catch_exceptions=False)


def _records(folder):
    return read_records(Path(folder))


def _only_folder(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


# --- report pooling --------------------------------------------------------------------


def test_report_refuses_to_pool_cpu_and_h100_reference_runs():
    # Both were written with the same (old, options-only) hash: the device tells them apart.
    result = _cli("report", CPU_REF, H100_REF)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: these runs are different experiments (config ")
    assert (
        "on cpu (AMD EPYC)" in result.stderr and "on cuda (NVIDIA H100 80GB HBM3)" in result.stderr
    )
    assert result.stderr.endswith(
        "pass --compare to see them side by side, or report them one at a time\n"
    )
    compared = _cli("report", CPU_REF, H100_REF, "--compare")
    assert compared.exit_code == 0, compared.output


def test_same_experiment_in_two_folders_counts_each_needle_once(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(CPU_REF, copy)
    one = _cli("report", CPU_REF)
    both = _cli("report", CPU_REF, copy)
    assert both.exit_code == 0, both.output
    assert one.stdout.splitlines()[2:] == both.stdout.splitlines()[3:]


def test_edited_config_of_one_folder_is_warned(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CPU_REF, run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(cfg, seed=5)))
    result = _cli("report", run)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: {str(run / 'config.json')!r} no longer matches the config "
        "ead3737e93d2 its trials were run with (edited after the run?): the "
        "table shows the trials as recorded\n"
    )
    assert _cli("report", CPU_REF).stderr == ""


def _step_sweep_records(folder: Path) -> None:
    base = {
        "model": "m",
        "device": "cpu",
        "config_hash": "abc",
        "sample": 0,
        "verdict": "PASS",
        "context": 1024,
        "depth": 0.5,
        "elapsed_s": 1.0,
    }
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "m", "config_hash": "abc"}))
    with open(folder / "trials.jsonl", "w") as fh:
        for step, verdict in ((2048, "PASS"), (8192, "FAIL")):
            fh.write(
                json.dumps({**base, "key": f"k{step}", "prefill_step": step, "verdict": verdict})
                + "\n"
            )


def test_prefill_step_sweep_is_two_rows_not_two_samples(tmp_path):
    _step_sweep_records(tmp_path / "run")
    result = _cli("report", tmp_path / "run")
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()[2:5]
    assert table == [
        "Context      Depth 50%      Accuracy",
        "1K step2048  PASS (1.00 s)  100%",
        "1K step8192  FAIL (1.00 s)  0%",
    ]


# --- records: foreign, order, malformed -------------------------------------------------


def test_foreign_rank_file_is_not_mixed_in(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CPU_REF, run)
    foreign = [
        dict(r, config_hash="0123456789ab", verdict="FAIL", response="no") for r in _records(run)
    ]
    (run / "trials.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in foreign))
    result = _cli("report", run)
    assert result.exit_code == 0, result.output
    assert "Total: 18 trials, 18 PASS, 0 FAIL" in result.stdout
    assert result.stderr == (
        f"warning: left out 18 record(s) of {run / 'trials.rank1.jsonl'} made "
        "by another configuration (not config ead3737e93d2)\n"
    )


def test_retried_error_in_an_earlier_named_file_wins_by_write_time(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "m", "config_hash": "h"}))
    rec = {"key": "k", "context": 256, "depth": 0.5, "sample": 0, "config_hash": "h"}
    (folder / "trials.rank1.jsonl").write_text(
        json.dumps({**rec, "verdict": "ERROR", "written_at": 100.0}) + "\n"
    )
    (folder / "trials.jsonl").write_text(
        json.dumps({**rec, "verdict": "PASS", "written_at": 200.0}) + "\n"
    )
    latest = store.latest_by_key(store.folder_records(folder))
    assert latest["k"]["verdict"] == "PASS"
    assert store.finished_keys(folder) == {"k"}


def test_a_clock_stepping_back_does_not_reorder_one_file(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "m", "config_hash": "h"}))
    rec = {"key": "k", "context": 256, "depth": 0.5, "sample": 0, "config_hash": "h"}
    (folder / "trials.jsonl").write_text(
        json.dumps({**rec, "verdict": "ERROR", "written_at": 200.0})
        + "\n"
        + json.dumps({**rec, "verdict": "PASS", "written_at": 100.0})
        + "\n"
    )  # retried later
    assert store.latest_by_key(store.folder_records(folder))["k"]["verdict"] == "PASS"


MALFORMED = [
    '{"key":"junk"}',
    '{"key":["x"]}',
    '{"key":"c1024-d0-s0-kvfp-mall-p2048"}',
    '{"key":"c1024-d0-s0-kvfp-mall-p2048","context":"1024","depth":0,"sample":0,"verdict":"PASS"}',
    "[1, 2]",
    "null",
]


def test_malformed_records_are_skipped_with_one_warning(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CPU_REF, run)
    with open(run / "trials.jsonl", "a") as fh:
        fh.write("\n".join(MALFORMED) + "\n")
    result = _cli("report", run)
    assert result.exit_code == 0, result.output
    assert "Total: 18 trials, 18 PASS" in result.stdout
    assert result.stderr == (
        f"warning: skipped 6 corrupt line(s) of {run / 'trials.jsonl'} "
        "(line 19: context is not a whole number, ...)\n"
    )


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        '"x"',
        '{"model": "m", "contexts": 5}',
        '{"model": "m", "depths": "a"}',
        "{not json",
    ],
)
def test_malformed_config_is_one_line(tmp_path, content):
    run = tmp_path / "run"
    shutil.copytree(CPU_REF, run)
    (run / "config.json").write_text(content)
    for args in (["report", run], ["run", "--resume", run]):
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(
            f"error: {str(run / 'config.json')!r} is not a valid niah config"
        )
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


# --- runs: hash coverage, union, resume, lock, SKIP, Ctrl-C (real model) ----------------


@pytest.mark.slow
def test_edited_haystack_file_is_a_new_configuration(tmp_path):
    hay = tmp_path / "hay.txt"
    hay.write_text("The river runs past the old mill. Birds sing at dawn. " * 40)
    out = tmp_path / "out"
    first = _cli("run", *SMALL, "--depth", "0.5", "--haystack", hay, "--out", out)
    assert first.exit_code == 0, first.output
    hay.write_text("A quiet town sleeps under the snow. Lamps glow in the windows. " * 40)
    second = _cli("run", *SMALL, "--depth", "0.5", "--haystack", hay, "--out", out)
    assert second.exit_code == 0, second.output
    assert "1 run, 0 already done" in second.stdout
    folders = sorted(p for p in out.iterdir())
    assert len(folders) == 2
    idents = [json.loads((f / "config.json").read_text())["identity"] for f in folders]
    assert idents[0]["haystack_digest"] != idents[1]["haystack_digest"]
    assert idents[0]["model_digest"] == idents[1]["model_digest"]
    for f in folders:  # every record carries its folder's hash and digests
        cfg = json.loads((f / "config.json").read_text())
        (rec,) = _records(f)
        assert rec["config_hash"] == cfg["config_hash"] == f.name.rsplit("-", 1)[1]
        assert rec["haystack_digest"] == cfg["identity"]["haystack_digest"]


@pytest.mark.slow
def test_identity_covers_model_backend_dtype_sdpa_and_versions(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _cli("run", *SMALL, "--depth", "0", "--out", out).exit_code == 0
    folder = _only_folder(out)
    ident = json.loads((folder / "config.json").read_text())["identity"]
    assert len(ident["model_digest"]) == 64 and ident["backend"] == "cpu"
    assert ident["compute_dtype"] == "float32" and ident["sdpa_threshold"] == "65536"
    assert ident["niah_version"].startswith("0.1.0+src.") and ident["mlx_version"]
    # the environment's SDPA settings change the route, so they change the configuration
    monkeypatch.setenv("NIAH_SDPA_CHUNK_THRESHOLD", "128")
    again = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert again.exit_code == 0 and "1 run, 0 already done" in again.stdout
    assert len(list(out.iterdir())) == 2
    # so does the FLOP budget per Metal command buffer (it sizes the chunks there)
    monkeypatch.delenv("NIAH_SDPA_CHUNK_THRESHOLD")
    monkeypatch.setenv("NIAH_SDPA_FLOP_BUDGET", "1e9")
    third = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert third.exit_code == 0 and "1 run, 0 already done" in third.stdout
    assert len(list(out.iterdir())) == 3
    # and the query block of the q-split route and of the fallback for a failed fused kernel
    monkeypatch.delenv("NIAH_SDPA_FLOP_BUDGET")
    monkeypatch.setenv("NIAH_SDPA_Q_BLOCK", "64")
    fourth = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert fourth.exit_code == 0 and "1 run, 0 already done" in fourth.stdout
    assert len(list(out.iterdir())) == 4
    # and MLX's GPU batching (it changes a CUDA trial's time and peak memory): recorded in the
    # identity and in every record, only when set, so runs made without it keep their hash
    assert "mlx_env" not in ident and "mlx_env" not in _records(folder)[0]
    monkeypatch.delenv("NIAH_SDPA_Q_BLOCK")
    monkeypatch.setenv("MLX_MAX_OPS_PER_BUFFER", "10")
    fifth = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert fifth.exit_code == 0 and "1 run, 0 already done" in fifth.stdout
    (batched,) = [p for p in out.iterdir() if "mlx_env" in (p / "config.json").read_text()]
    assert json.loads((batched / "config.json").read_text())["identity"]["mlx_env"] == (
        "MLX_MAX_OPS_PER_BUFFER=10"
    )
    assert [r["mlx_env"] for r in _records(batched)] == ["MLX_MAX_OPS_PER_BUFFER=10"]
    monkeypatch.delenv("MLX_MAX_OPS_PER_BUFFER")
    again = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert again.exit_code == 0 and "0 run, 1 already done" in again.stdout  # the first folder


@pytest.mark.slow
def test_smaller_grid_into_same_folder_keeps_the_union_and_resume_honours_it(tmp_path):
    out = tmp_path / "out"
    first = _cli("run", *SMALL, "--depth", "0,1", "--out", out)
    assert first.exit_code == 0, first.output
    folder = _only_folder(out)
    second = _cli("run", *SMALL, "--depth", "0.5", "--out", out)
    assert second.exit_code == 0 and "1 run, 0 already done" in second.stdout
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["depths"] == [0.0, 0.5, 1.0]
    resumed = _cli("run", "--resume", folder, "-q")
    assert resumed.exit_code == 0 and "0 run, 3 already done" in resumed.stdout
    assert len(_records(folder)) == 3


@pytest.mark.parametrize(
    "flag",
    [
        ["--depth", "0.5"],
        ["--context", "2k"],
        ["--seed", "3"],
        ["--sdpa", "chunked"],
        ["--no-prefix-reuse"],
    ],
)
def test_resume_refuses_options_it_cannot_honour(tmp_path, flag):
    run = tmp_path / "run"
    shutil.copytree(CPU_REF, run)
    result = _cli("run", "--resume", run, *flag)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {flag[0]} cannot be combined with --resume (the run folder's "
        f"own options are used): drop {flag[0]}, or start a new run without "
        "--resume\n"
    )


@pytest.mark.slow
def test_resume_on_another_identity_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _cli("run", *SMALL, "--depth", "0", "--out", out).exit_code == 0
    folder = _only_folder(out)
    monkeypatch.setenv("NIAH_SDPA_CHUNK_SIZE", "128")
    result = _cli("run", "--resume", folder, "-q")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {str(folder)!r} holds results of another configuration "
        "(sdpa_chunk_size 32768 -> 128): start a new run without --resume, "
        "or give another --out\n"
    )


@pytest.mark.slow
def test_second_run_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    assert _cli("run", *SMALL, "--depth", "0", "--out", out).exit_code == 0
    folder = _only_folder(out)
    logged = (folder / "runs.jsonl").read_text()  # the first run's start, load and end events
    with store.FolderLock(folder):
        result = _cli("run", *SMALL, "--depth", "0,1", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: another niah run (pid ")
    assert result.stderr.endswith(
        f"is writing to {str(folder)!r}: wait for it to finish, or give another --out\n"
    )
    assert len(_records(folder)) == 1  # nothing ran twice
    # and the refused run left the folder as it was: no grid merged, no start line
    assert json.loads((folder / "config.json").read_text())["depths"] == [0.0]
    assert (folder / "runs.jsonl").read_text() == logged
    after = _cli("run", *SMALL, "--depth", "0,1", "--out", out)  # the lock went with its holder
    assert after.exit_code == 0 and "1 run, 1 already done" in after.stdout


def test_a_finished_rerun_is_answered_without_loading_the_model(tmp_path, monkeypatch):
    """The same command again, or --resume, on a folder holding every asked trial answers from
    the folder: the same table, a start and an end logged, no model load (the load would be
    the whole wait). A rerun asking one more cell loads and runs just that cell."""
    from niah.model import ModelSession

    out = tmp_path / "out"
    first = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert first.exit_code == 0
    folder = _only_folder(out)
    loads = []
    real_init = ModelSession.__init__

    def counted(self, *a, **kw):
        loads.append(1)
        real_init(self, *a, **kw)

    monkeypatch.setattr(ModelSession, "__init__", counted)
    again = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert again.exit_code == 0 and loads == []
    assert again.stdout.replace("0 run, 1 already done", "1 run, 0 already done") == first.stdout
    resumed = _cli("run", "--resume", folder, "-q")
    assert resumed.exit_code == 0 and loads == [] and "0 run, 1 already done" in resumed.stdout
    events = [e["event"] for e in read_records(folder, "runs.jsonl")]
    assert events.count("start") == 3 and events.count("load") == 1
    assert events.count("end") == 3 and events.count("phases") == 3
    more = _cli("run", *SMALL, "--depth", "0,1", "--out", out)
    assert more.exit_code == 0 and loads == [1] and "1 run, 1 already done" in more.stdout


def test_a_rerun_on_another_identity_is_refused(tmp_path, monkeypatch):
    """The no-load answer needs the folder's own hash: --resume of a finished folder of another
    chunk threshold (part of the identity) is refused (before any load: test_hostile7.py)."""
    out = tmp_path / "out"
    assert _cli("run", *SMALL, "--depth", "0", "--out", out).exit_code == 0
    folder = _only_folder(out)
    monkeypatch.setenv("NIAH_SDPA_CHUNK_THRESHOLD", "4096")
    result = _cli("run", "--resume", folder, "-q")
    assert result.exit_code == 2
    assert "holds results of another configuration (sdpa_threshold" in result.stderr


@pytest.mark.slow
def test_skip_is_retried_on_a_machine_with_more_memory(tmp_path, monkeypatch):
    import niah.run.sweep
    from niah import preflight

    out = tmp_path / "out"
    real = preflight.working_set_bytes
    monkeypatch.setattr(preflight, "working_set_bytes", lambda: 64 * 1024**2)
    # a grid none of whose trials fits is refused before the load (test_beyond_trained.py);
    # here the trial must reach the per-trial preflight to be recorded SKIP
    monkeypatch.setattr(niah.run.sweep, "check_grid_fits", lambda *a, **kw: None)
    assert _cli("run", *SMALL, "--depth", "0", "--out", out).exit_code == 1  # nothing ran: exit 1
    folder = _only_folder(out)
    assert _records(folder)[0]["verdict"] == "SKIP"
    monkeypatch.setattr(preflight, "working_set_bytes", real)
    again = _cli("run", "--resume", folder, "-q")
    assert again.exit_code == 0 and "1 run, 0 already done" in again.stdout
    assert _records(folder)[-1]["verdict"] in ("PASS", "FAIL", "NULL")


@pytest.mark.slow
def test_ctrl_c_names_the_run_folder(tmp_path, monkeypatch):
    from niah.model import ModelSession

    def interrupt(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSession, "generate", interrupt)
    out = tmp_path / "out"
    result = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert result.exit_code == 130
    folder = _only_folder(out)
    assert result.stderr == (
        "interrupted: finished trials are saved; run the same command again "
        f"or niah run --resume {folder} to finish the rest\n"
    )
    # where the time went up to the interruption is logged, marked unfinished
    log = read_records(folder, "runs.jsonl")
    (phases,) = [e for e in log if e["event"] == "phases"]
    assert phases["finished"] is False and phases["seconds"]["load"] > 0
    assert "trials" in phases["seconds"]  # the loop it was in when Ctrl-C came


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_resume_runs_exactly_the_rest(tmp_path, monkeypatch):
    """`timeout`, a cancelled CI job or `kill` send SIGTERM, whose default ended the process
    with no word, no phases and no folder named. Here a real SIGTERM arrives during the second
    trial: the first stays saved, the run says what stopped it and exits 143, and the resume
    runs the other two trials, none twice."""
    import os
    import signal

    from niah.model import ModelSession

    real, calls = ModelSession.generate, []

    def terminated_in_second_trial(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *a, **kw)

    monkeypatch.setattr(ModelSession, "generate", terminated_in_second_trial)
    out = tmp_path / "out"
    result = _cli("run", *SMALL, "--depth", "0,0.5,1", "--warm-up", "off", "--out", out)
    assert result.exit_code == 143, result.output
    folder = _only_folder(out)
    assert result.stderr == (
        "stopped by SIGTERM: finished trials are saved; run the same command again "
        f"or niah run --resume {folder} to finish the rest\n"
    )
    assert [r["depth"] for r in read_records(folder)] == [0.0]
    log = read_records(folder, "runs.jsonl")
    (phases,) = [e for e in log if e["event"] == "phases"]
    assert phases["finished"] is False and "trials" in phases["seconds"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored after the run

    monkeypatch.setattr(ModelSession, "generate", real)
    again = _cli("run", "--resume", folder, "-q")
    assert again.exit_code == 0 and "2 run, 1 already done" in again.stdout
    assert sorted(r["depth"] for r in read_records(folder)) == [0.0, 0.5, 1.0]


def test_ctrl_c_during_the_device_probe_logs_phases_and_names_the_folder(tmp_path, monkeypatch):
    """The probe (timing the device for trial estimates) is a phase of the sweep like the
    trial loop: Ctrl-C there logs the phases so far, unfinished, and names the run folder."""
    import niah.preflight

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(niah.preflight, "probe_throughput", interrupt)
    monkeypatch.setenv("NIAH_LONG_TRIAL_S", "1")  # probe whatever the contexts
    out = tmp_path / "out"
    result = _cli("run", *SMALL, "--depth", "0", "--out", out)
    assert result.exit_code == 130
    folder = _only_folder(out)
    assert f"niah run --resume {folder} to finish the rest" in result.stderr
    log = read_records(folder, "runs.jsonl")
    (phases,) = [e for e in log if e["event"] == "phases"]
    assert phases["finished"] is False and "probe" in phases["seconds"]
    assert [e["event"] for e in log][-2:] == ["phases", "end"]


def test_reuse_mismatch_names_trials_timed_with_the_other_setting(tmp_path):
    from niah.run.reuse import reuse_mismatch as _reuse_mismatch

    recs = [
        {"prefix_reuse": "reused", "verdict": "PASS"},
        {"prefix_reuse": "fresh", "verdict": "FAIL"},
        {"prefix_reuse": "off", "verdict": "PASS"},
        {"prefix_reuse": "reused", "verdict": "ERROR"},
    ]
    recs.append({"prefix_reuse": "reused", "verdict": "FAIL"})
    assert _reuse_mismatch(recs, prefix_reuse=False, folder=tmp_path) == [
        f"2 trials kept from {tmp_path} ran with prefix reuse on: verdicts hold, but their times "
        "are not this setting's; use another --out to time every trial with this setting"
    ]
    assert _reuse_mismatch(recs, prefix_reuse=True, folder=tmp_path) == [
        f"1 trial kept from {tmp_path} ran with prefix reuse off: verdicts hold, but their times "
        "are not this setting's; use another --out to time every trial with this setting"
    ]
    assert _reuse_mismatch(recs[:2], prefix_reuse=True, folder=tmp_path) == []
    # a fresh (or untrimmable-cache) trial prefilled its whole prompt, as one without reuse does
    assert (
        _reuse_mismatch(
            [
                {"prefix_reuse": "fresh", "verdict": "PASS"},
                {"prefix_reuse": "untrimmable-cache", "verdict": "PASS"},
            ],
            prefix_reuse=False,
            folder=tmp_path,
        )
        == []
    )


@pytest.mark.slow
def test_no_prefix_reuse_into_a_folder_timed_with_reuse_warns(tmp_path):
    out = tmp_path / "out"
    step = ["--prefill-step", "64"]  # small enough for the depth-1 trial to reuse a prefix
    assert _cli("run", *SMALL, *step, "--depth", "0.5,1", "--out", out).exit_code == 0
    again = _cli("run", *SMALL, *step, "--depth", "0.5,1", "--no-prefix-reuse", "--out", out)
    assert again.exit_code == 0 and "0 run, 2 already done" in again.stdout
    folder = _only_folder(out)
    reused = sum(r["prefix_reuse"] == "reused" for r in _records(folder))
    assert reused == 1 and again.stderr == (
        f"warning: 1 trial kept from {folder} ran with prefix reuse on: verdicts hold, but their "
        "times are not this setting's; use another --out to time every trial with this setting\n"
    )


def test_repeatable_memory_is_kept_for_resume_and_said_to_change_nothing_on_the_cpu(
    tmp_path, monkeypatch
):
    from niah.backend import backend
    from niah.identity import MLX_ENV

    for name in MLX_ENV:  # none set (the note says MLX's defaults); restored afterwards even
        monkeypatch.setenv(name, "x")  # where the option sets one (on CUDA)
        monkeypatch.delenv(name)
    here = backend()
    note = (
        f"note: --repeatable-memory changes nothing on the {here} backend (it bounds MLX's CUDA "
        "graphs); peaks here are MLX's defaults\n"
        if here != "cuda"
        else ""
    )
    out = tmp_path / "out"
    from niah.environment import mlx_has_allocated

    too_late = here == "cuda" and mlx_has_allocated()  # earlier tests ran MLX in this process
    first = _cli("run", *SMALL, "--depth", "0", "--repeatable-memory", "--out", out)
    if too_late:  # the variable would name a setting MLX never read: refused, nothing written
        assert first.exit_code == 2 and first.stderr == (
            "error: --repeatable-memory sets MLX_MAX_MB_PER_BUFFER before MLX's first GPU "
            "work, but MLX has already run in this process: start a new process for this run\n"
        )
        assert not out.exists() or not any(out.iterdir())
        return
    assert first.exit_code == 0 and first.stderr.startswith(note), first.stderr
    folder = _only_folder(out)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["repeatable_memory"] is True
    assert ("mlx_env" in cfg["identity"]) == (here == "cuda")
    resumed = _cli("run", "--resume", folder, "-q")  # the folder's option is applied again
    if here == "cuda":
        # MLX has run in this process now, which did not start with the value: niah cannot show
        # MLX read it, so the resume is refused here (from a shell it runs: scripts/
        # repeatable_memory_probe.sh, step 4)
        assert resumed.exit_code == 2 and resumed.stderr == (
            "error: --repeatable-memory sets MLX_MAX_MB_PER_BUFFER before MLX's first GPU "
            "work, but MLX has already run in this process: start a new process for this run\n"
        )
        return  # below: the same folder without the option, the same measurement on cpu/metal
    assert resumed.exit_code == 0 and resumed.stderr.startswith(note), resumed.stderr
    assert "0 run, 1 already done" in resumed.stdout
    import niah.backend

    monkeypatch.setattr(niah.backend, "backend", lambda: "cuda")  # the CLI's check, as on CUDA
    monkeypatch.setenv("MLX_MAX_MB_PER_BUFFER", "1000")
    other = _cli("run", "--resume", folder, "-q")
    assert other.exit_code == 2 and other.stderr == (
        f"error: run folder {str(folder)!r} was made with --repeatable-memory "
        "(MLX_MAX_MB_PER_BUFFER=100), but the environment has MLX_MAX_MB_PER_BUFFER='1000': "
        "unset MLX_MAX_MB_PER_BUFFER and resume again\n"
    )
    monkeypatch.undo()  # back to this backend, none of the variables set
    for name in MLX_ENV:
        monkeypatch.delenv(name, raising=False)
    plain = _cli("run", *SMALL, "--depth", "0,1", "--out", out)  # adds a depth to it
    assert plain.exit_code == 0 and "1 run, 1 already done" in plain.stdout and not plain.stderr
    merged = json.loads((folder / "config.json").read_text())
    assert merged["repeatable_memory"] is True  # the folder's choice survives the merge
    assert merged["depths"] == [0.0, 1.0]


def test_run_sweep_on_cuda_refuses_repeatable_memory_the_process_did_not_set(tmp_path, monkeypatch):
    # run_sweep called directly (not through `niah run`, which sets the variable): on CUDA the
    # records would claim MLX_MAX_MB_PER_BUFFER=100 for a peak made under MLX's defaults
    import niah.run.sweep as sweep
    from niah.config import RunConfig
    from niah.errors import NiahError

    monkeypatch.setattr(sweep, "_backend_name", lambda: "cuda")
    monkeypatch.delenv("MLX_MAX_MB_PER_BUFFER", raising=False)
    out = tmp_path / "out"
    cfg = RunConfig(
        model="any.gguf", contexts=(256,), depths=(0.5,), repeatable_memory=True, out=str(out)
    )
    with pytest.raises(NiahError, match="MLX_MAX_MB_PER_BUFFER is not 100 here"):
        sweep.run_sweep(cfg)
    assert not out.exists()  # refused before any folder or weight


def test_mlx_work_after_niah_run_set_repeatable_memory_does_not_refuse_the_sweep(tmp_path):
    # `niah run` sets the variable before MLX first runs; a multi-rank launch then agrees on its
    # id through MLX (a CPU-stream all_sum) before the sweep starts. run_sweep's check must not
    # read that as "set after MLX ran" (it refused every mlx.launch run with the option on CUDA).
    # A fresh process, with both checks told the backend is CUDA; the model runs on this one.
    import os
    import subprocess
    import sys

    code = f"""
import sys
import mlx.core as mx
import niah.environment as E
import niah.run.ranks as R
import niah.run.sweep as S
apply, check = E.apply_repeatable_memory, S.check_repeatable_memory
E.apply_repeatable_memory = lambda backend, **kw: apply("cuda", **kw)
S.check_repeatable_memory = lambda backend, **kw: check("cuda", **kw)
def launch_id(world):
    mx.eval(mx.ones(4, stream=mx.cpu) + 1)
    return "0" * 12
R.launch_id = launch_id
sys.argv = ["niah", "run", *{[*SMALL, "--depth", "0.5", "--repeatable-memory"]!r},
            "--out", {str(tmp_path / "out")!r}]
from niah.cli import main
main()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    (record,) = _records(_only_folder(tmp_path / "out"))
    assert record["mlx_env"] == "MLX_MAX_MB_PER_BUFFER=100"
