"""Hostile review 7: the tokenizer built before the load, and reruns answered from a folder."""

from __future__ import annotations

import json

import pytest

from niah.model import load_tokenizer


@pytest.fixture(scope="module")
def mlx_folder(gguf_path, tmp_path_factory):
    """An MLX model folder (weights, config.json, tokenizer files) of the embedded GGUF."""
    from niah.gguf.convert import convert

    folder = tmp_path_factory.mktemp("mlx") / "smol"
    convert(gguf_path, folder)
    return folder


def test_early_tokenizer_takes_generation_configs_eos_as_mlx_lm_load_does(mlx_folder, tmp_path):
    """mlx-lm's load reads eos_token_id from generation_config.json over config.json's (an
    instruct model's end of turn is often there only); the tokenizer built before the load,
    which the session keeps, must stop on the same tokens, or answers run past the turn."""
    import shutil

    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_lm_tokenizer

    folder = tmp_path / "gen"
    shutil.copytree(mlx_folder, folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    wanted = mlx_lm_tokenizer(folder, eos_token_ids=load_config(folder)["eos_token_id"])
    assert set(wanted.eos_token_ids) == {2, 7}
    assert set(load_tokenizer(str(folder)).eos_token_ids) == {2, 7}


def test_a_runs_log_cut_mid_line_is_skipped_and_not_glued_to_the_next_event(tmp_path):
    """A run killed while it appended to runs.jsonl leaves a partial last line: the next run
    ends it before its own events (not glued into one corrupt line), and every reader (the
    rerun's warm-up note, niah report) skips it, never a traceback."""
    from conftest import invoke, read_records

    out = tmp_path / "out"
    small = ["run", "-c", "256", "-d", "0.5", "--max-tokens", "8", "-o", out, "-q"]
    assert invoke(small).exit_code == 0
    (folder,) = out.iterdir()
    log = folder / "runs.jsonl"
    log.write_text(log.read_text()[:-20])  # the last event cut mid-line
    again = invoke(small)
    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    lines = log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines[-3:]] == ["start", "phases", "end"]
    report = invoke(["report", folder])
    assert report.exit_code == 0, report.output
    assert read_records(folder)  # the trial is still there


def test_resume_on_another_identity_is_refused_before_any_weight_loads(tmp_path, monkeypatch):
    """The identity a load would give is known before the load (niah.run.finished): --resume
    of a folder holding another configuration's results is refused then, with the line the
    loaded run gives, not after a model load spent for nothing."""
    from conftest import invoke

    from niah.model import ModelSession

    out = tmp_path / "out"
    small = ["run", "-c", "256", "-d", "0.5", "--max-tokens", "8", "-o", out, "-q"]
    assert invoke(small).exit_code == 0
    (folder,) = out.iterdir()

    def fail(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ModelSession, "__init__", fail)
    monkeypatch.setenv("NIAH_SDPA_Q_BLOCK", "64")
    result = invoke(["run", "--resume", folder, "-q"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {str(folder)!r} holds results of another configuration (sdpa_q_block "
        "1024 -> 64): start a new run without --resume, or give another --out\n",
    )


def test_a_finished_rerun_is_answered_where_no_trial_would_fit(tmp_path, monkeypatch):
    """The grid's memory check refuses a grid none of whose trials fits before a load; a
    rerun with nothing left to run loads nothing and runs nothing, so it is answered from its
    folder on a machine with less memory too (the folder copied from a larger one)."""
    from conftest import invoke

    from niah import preflight

    out = tmp_path / "out"
    small = ["run", "-c", "256", "-d", "0.5", "--max-tokens", "8", "-o", out, "-q"]
    assert invoke(small).exit_code == 0
    monkeypatch.setattr(preflight, "working_set_bytes", lambda: 64 * 1024**2)
    refused = invoke(["run", "-c", "256,512", *small[3:]])  # a trial to run: refused as before
    assert refused.exit_code == 2 and "no trial of this grid fits in memory" in refused.stderr
    again = invoke(small)
    assert again.exit_code == 0, again.stderr
    assert "0 run, 1 already done" in again.stdout


def test_a_kv_group_size_that_does_not_divide_the_head_is_refused_before_any_load(
    tmp_path, monkeypatch
):
    """The head size is in the model's metadata: --kv-group-size that does not divide it is
    refused before the load, not after a whole load spent for nothing."""
    from conftest import invoke

    from niah.model import ModelSession

    def fail(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ModelSession, "__init__", fail)
    out = tmp_path / "out"
    args = ["-c", "256", "-d", "0.5", "--max-tokens", "8", "--kv-bits", "4"]
    result = invoke(["run", *args, "--kv-group-size", "128", "-o", out, "-q"])
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --kv-group-size 128 does not divide the model's head size 64: use 32 or 64\n",
    )
    assert not out.exists()
